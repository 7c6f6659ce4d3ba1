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
MAX_TEXT_BYTES = 16 * 1024 * 1024  # ~4M tokens: hours on a CPU; the token list stays a few hundred MB
PROGRESS_EVERY = 2.0  # seconds between progress lines on stderr


def _binary(source: str) -> UsageError:
    # Binary data scores as a meaningless stream of byte tokens for minutes: refuse it.
    return UsageError(f"{source} is binary data, not text (it contains NUL bytes)",
                      "perplexity scores UTF-8 text; convert the file first")


def _too_long(source: str) -> UsageError:
    return UsageError(f"{source} is too long: more than {MAX_TEXT_BYTES // 2**20} MiB of text",
                      "score a part of it (e.g. head -c 1M FILE | llmcli perplexity)")


def read_text(file: str | None) -> str:
    """The file's text, or stdin for ``-`` or no file. Invalid UTF-8 becomes U+FFFD, with a warning;
    binary data (NUL bytes) and text over MAX_TEXT_BYTES are usage errors."""
    source = "stdin" if file is None or file == "-" else file
    if source == "stdin":
        data = o.read_stdin_bytes(limit=MAX_TEXT_BYTES + 1)  # bounded: more is refused anyway
        if data is None:
            raise UsageError("no text to score", "pass a file, or pipe text on stdin: llmcli perplexity notes.txt")
    else:
        path = Path(file).expanduser()
        try:
            if path.stat().st_size > MAX_TEXT_BYTES:
                raise _too_long(file)
            data = path.read_bytes()
        except FileNotFoundError:
            raise UsageError(f"file not found: {file}") from None
        except IsADirectoryError:
            raise UsageError(f"{file} is a directory, not a text file") from None
        except OSError as e:
            raise UsageError(f"cannot read {file}: {e.strerror}") from None
    if len(data) > MAX_TEXT_BYTES:
        raise _too_long(source)
    if b"\x00" in data:
        raise _binary(source)
    return o.decode_text(data, source)


def _progress(verbose: bool):
    """Every window with -v; otherwise a line every PROGRESS_EVERY seconds, so a long text shows
    that it is moving (short ones print nothing)."""
    import time

    from llmcli.output import info

    start = last = time.monotonic()

    def report(done: int, total: int) -> None:
        nonlocal last
        now = time.monotonic()
        if not verbose and (now - last < PROGRESS_EVERY or done == total):
            return
        last = now
        elapsed = now - start
        left = elapsed / done * (total - done)
        info(f"perplexity: window {done}/{total} ({100 * done // total} %), {elapsed:.0f} s elapsed, "
             f"about {left:.0f} s left")

    return report


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
    from llmcli.output import dumps
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
        result = score(engine, ids, ctx=window, stride=step, progress=_progress(verbose))
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
