"""``llmcli perplexity``: perplexity and mean negative log-likelihood of a text."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from llmcli import params as P
from llmcli.cli import options as o
from llmcli.errors import UsageError

DEFAULT_WINDOW = 512  # like llama-perplexity's default -c


def read_text(file: str | None) -> str:
    """The file's text, or stdin for ``-`` or no file. Invalid UTF-8 becomes U+FFFD, with a warning."""
    if file is None or file == "-":
        text = o.read_stdin_text()
        if text is None:
            raise UsageError("no text to score", "pass a file, or pipe text on stdin: llmcli perplexity notes.txt")
        return text
    path = Path(file).expanduser()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"file not found: {file}") from None
    except IsADirectoryError:
        raise UsageError(f"{file} is a directory, not a text file") from None
    except OSError as e:
        raise UsageError(f"cannot read {file}: {e.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        from llmcli.output import warn

        warn(f"{file} is not valid UTF-8 (first bad byte at offset {e.start}); invalid bytes were replaced by U+FFFD")
        return data.decode("utf-8", errors="replace")


WINDOW = P.Param("ctx", int, "Window size in tokens, capped at the model's context.", DEFAULT_WINDOW, lo=2,
                 hi=P.CTX_MAX, panel=P.MODEL)
STRIDE = P.Param("stride", int, "Tokens the window moves each step; each token is scored once, with at least "
                 "ctx-stride tokens of context.", lo=1, hi=P.CTX_MAX, default_text="ctx/2", panel=P.MODEL)


@o.table_options("model", "backend", "device", "dtype", "threads", "gpu_layers")
def perplexity(
    file: Annotated[Optional[str], typer.Argument(help="Text file to score; '-' or nothing reads stdin.",
                                                  show_default=False)] = None,
    ctx: o.option_type(WINDOW) = None,
    stride: o.option_type(STRIDE) = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.",
                                           rich_help_panel=o.OUTPUT_PANEL)] = False,
    allow_pickle: o.AllowPickleOpt = False,
    trust_remote_code: o.TrustRemoteCodeOpt = False,
    verbose: o.VerboseOpt = False,
    flags: dict | None = None,
) -> None:
    """Perplexity and mean negative log-likelihood of a text, with tokens/s.

    The text is tokenized as plain text (a BOS when the model wants one; special-token
    text is not parsed) and scored over sliding windows of --ctx tokens moving by
    --stride. Lower is better; the same text on two backends should agree within ~1 %.

    Examples:

      llmcli perplexity -m model.gguf notes.txt

      cat notes.txt | llmcli perplexity --backend torch --json
    """
    from llmcli.config import load_settings
    from llmcli.output import dumps, info
    from llmcli.perplexity import score

    window = WINDOW.parse(ctx, WINDOW.flag) if ctx is not None else DEFAULT_WINDOW
    stride = STRIDE.parse(stride, STRIDE.flag) if stride is not None else None
    given = o.parse_flags(flags)
    settings = load_settings()
    text = read_text(file)
    opts = o.backend_options(settings, given, verbose=verbose, allow_pickle=allow_pickle,
                             trust_remote_code=trust_remote_code, ctx=window)
    ref, engine = o.load_model(given["model"], settings, opts)
    try:
        if not engine.capabilities.logprobs:
            raise UsageError(f"the {engine.name} backend cannot score text: it gives no log-probabilities",
                             "run perplexity on a local model (a GGUF file or an HF-format folder)")
        window = min(window, engine.n_ctx)
        step = stride if stride is not None else max(1, window // 2)
        if step > window:
            raise UsageError(f"invalid --stride {step}: larger than the window ({window} tokens)")
        ids = engine.tokenize(text, add_special=True, parse_special=False)
        progress = None
        if verbose:
            def progress(done: int, total: int) -> None:
                info(f"window {done}/{total}")
        result = score(engine, ids, ctx=window, stride=step, progress=progress)
    finally:
        engine.close()
    if json_out:
        record = {**result.to_dict(), "model": ref.display, "backend": engine.name}
        sys.stdout.write(dumps(record) + "\n")
    else:
        sys.stdout.write(
            f"perplexity: {result.perplexity:.4f}\n"
            f"mean NLL: {result.mean_nll:.6f}\n"
            f"tokens: {result.tokens} scored of {result.text_tokens} ({result.windows} window(s) of {result.ctx}, "
            f"stride {result.stride})\n"
            f"speed: {result.tokens_per_second:.1f} tokens/s ({result.evaluated_tokens} evaluated in "
            f"{result.seconds:.2f} s, {engine.name})\n")
    sys.stdout.flush()


def register(app: typer.Typer) -> None:
    app.command("perplexity")(perplexity)
