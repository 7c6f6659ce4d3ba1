"""The Typer application and the single place where errors become exit codes."""

from __future__ import annotations

import os
import sys

import typer

from llmcli import __version__

app = typer.Typer(
    name="llmcli",
    help="Run large language models locally: llama.cpp (GGUF) on CPU, PyTorch on GPU.",
    no_args_is_help=True,
    # `--install-completion` / `--show-completion`; completing runs this process with
    # _LLMCLI_COMPLETE set (docs/usage.md) and must import nothing heavy.
    add_completion=True,
    pretty_exceptions_enable=False,
    # Plain help: rich help formatting imports markdown-it and rich (~120 ms), which would
    # push `llmcli --help` past its 0.3 s budget.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"llmcli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version and exit."),
) -> None:
    """Run large language models locally: llama.cpp (GGUF) on CPU, PyTorch on GPU."""


def _register() -> None:
    # Each command module adds its commands; modules import heavy libraries only inside commands.
    from llmcli.cli import bench, cache, chat, finetune, generate, logs, models, perplexity, tokenize

    for module in (generate, tokenize, models, chat, perplexity, cache, bench, logs, finetune):
        module.register(app)


_register()


def _debug() -> bool:
    return os.environ.get("LLMCLI_DEBUG", "") not in ("", "0") or any(
        a in ("-v", "--verbose") for a in sys.argv[1:])


def main() -> None:
    from llmcli.errors import LlmcliError
    from llmcli.output import OutputClosed, OutputError, guard_stdio, print_error, silence_stdout

    guard_stdio()
    try:
        # Non-standalone, so Typer's usage errors reach us and get the same one-line format.
        # prog_name fixed, so the completion variable is _LLMCLI_COMPLETE however llmcli was started.
        rv = app(standalone_mode=False, prog_name="llmcli")
        sys.stdout.flush()  # a late write error (>/dev/full) is reported here, not at interpreter exit
        sys.exit(rv if isinstance(rv, int) else 0)
    except OutputClosed:
        # `llmcli generate … | head -1`: the reader left; that is not an error (pipefail-safe exit 0).
        silence_stdout()
        sys.exit(0)
    except LlmcliError as e:
        if _debug():
            import traceback

            traceback.print_exc()
        if isinstance(e, OutputError):
            silence_stdout()
        print_error(e.message, e.hint)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001
        if _is_usage_error(e):
            ctx = getattr(e, "ctx", None)
            if type(e).__name__ == "NoArgsIsHelpError":
                # Standalone mode would print the help here; outside it we must, like `git`, to stdout.
                if ctx is not None:
                    try:
                        print(ctx.get_help())
                        sys.stdout.flush()
                    except (OutputClosed, OutputError):
                        silence_stdout()
                sys.exit(0)
            where = f"{ctx.command_path} --help" if ctx is not None else "llmcli --help"
            print_error(e.format_message(), f"see '{where}'")
            sys.exit(e.exit_code)
        if _debug():
            raise
        print_error(f"internal error: {type(e).__name__}: {e}", "run again with -v for a traceback and report it")
        sys.exit(1)


def _is_usage_error(e: Exception) -> bool:
    # Typer keeps its Click private, so recognise its usage errors by their public shape.
    return callable(getattr(e, "format_message", None)) and isinstance(getattr(e, "exit_code", None), int)
