"""Options shared by several commands, so every command spells them the same way,
and the functions that turn flags + config + env into validated values."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from llmcli.backends.base import SamplingParams
from llmcli.errors import UsageError

MODEL_PANEL = "Model"
SAMPLING_PANEL = "Sampling"
OUTPUT_PANEL = "Output"

ModelOpt = Annotated[Optional[str], typer.Option(
    "-m", "--model", help="A .gguf file, an HF-format folder, a name from the store, or an OpenAI-compatible "
    "server: http://HOST:PORT/v1 or 'http://HOST:PORT/v1#MODEL_ID'. Default: the configured default model, else "
    "the embedded SmolLM2-135M.", rich_help_panel=MODEL_PANEL, show_default=False)]
BackendOpt = Annotated[Optional[str], typer.Option(
    "--backend", help="auto, llama.cpp, torch or remote (a URL as the model selects remote).",
    rich_help_panel=MODEL_PANEL, show_default=False)]
ApiKeyOpt = Annotated[Optional[str], typer.Option(
    "--api-key", help="API key for a model served at a URL (default: $LLMCLI_API_KEY, else $OPENAI_API_KEY). "
    "Never printed or saved.", rich_help_panel=MODEL_PANEL, show_default=False)]
DeviceOpt = Annotated[Optional[str], typer.Option(
    "--device", help="cpu, cuda, cuda:N or mps (torch backend). Default: best available.",
    rich_help_panel=MODEL_PANEL, show_default=False)]
DtypeOpt = Annotated[Optional[str], typer.Option(
    "--dtype", help="auto, float32, float16 or bfloat16 (torch backend).", rich_help_panel=MODEL_PANEL,
    show_default=False)]
CtxOpt = Annotated[Optional[int], typer.Option(
    "--ctx", help="Context window cap in tokens (default: the model's, capped at 4096; 0 = model's full window).",
    rich_help_panel=MODEL_PANEL, show_default=False)]
ThreadsOpt = Annotated[Optional[int], typer.Option(
    "--threads", help="CPU threads (default: physical cores).", rich_help_panel=MODEL_PANEL, show_default=False)]
GpuLayersOpt = Annotated[Optional[int], typer.Option(
    "--gpu-layers", help="Layers to offload to the GPU (llama.cpp built with GPU support; -1 = all).",
    rich_help_panel=MODEL_PANEL, show_default=False)]
AllowPickleOpt = Annotated[bool, typer.Option(
    "--allow-pickle", help="Allow loading pickle (.bin/.pt) weights, which can run code. Off by default.",
    rich_help_panel=MODEL_PANEL)]
TrustRemoteCodeOpt = Annotated[bool, typer.Option(
    "--trust-remote-code", help="Allow an HF model folder to run its own Python code. Off by default.",
    rich_help_panel=MODEL_PANEL)]
CompileOpt = Annotated[bool, typer.Option(
    "--compile", help="torch backend: static KV cache + torch.compile (GPU).", rich_help_panel=MODEL_PANEL)]
ThinkOpt = Annotated[Optional[str], typer.Option(
    "--think", help="Where a reasoning model's <think> text goes: show, hide or stderr. [default: stderr when "
    "stdout is not a terminal, dimmed otherwise]", rich_help_panel=OUTPUT_PANEL, show_default=False)]
VerboseOpt = Annotated[bool, typer.Option(
    "-v", "--verbose", help="Explain the backend choice and show tracebacks (LLMCLI_DEBUG=1 adds the "
    "llama.cpp/transformers logs).")]

MaxTokensOpt = Annotated[Optional[int], typer.Option(
    "--max-tokens", help="Stop after this many generated tokens (default: until end of text or the window is full).",
    rich_help_panel=SAMPLING_PANEL, show_default=False)]
TemperatureOpt = Annotated[Optional[float], typer.Option(
    "--temperature", "-t", help="Sampling temperature; 0 = greedy. [default: 0.8]", rich_help_panel=SAMPLING_PANEL,
    show_default=False)]
TopKOpt = Annotated[Optional[int], typer.Option(
    "--top-k", help="Keep the k most likely tokens; 0 disables. [default: 40]", rich_help_panel=SAMPLING_PANEL,
    show_default=False)]
TopPOpt = Annotated[Optional[float], typer.Option(
    "--top-p", help="Nucleus sampling mass in (0, 1]. [default: 0.95]", rich_help_panel=SAMPLING_PANEL,
    show_default=False)]
MinPOpt = Annotated[Optional[float], typer.Option(
    "--min-p", help="Drop tokens below min-p × the top probability. [default: 0.05]",
    rich_help_panel=SAMPLING_PANEL, show_default=False)]
RepeatPenaltyOpt = Annotated[Optional[float], typer.Option(
    "--repeat-penalty", help="Penalty for tokens among the last 64; 1 disables. [default: 1.0]",
    rich_help_panel=SAMPLING_PANEL, show_default=False)]
NoRepeatNgramOpt = Annotated[Optional[int], typer.Option(
    "--no-repeat-ngram-size", help="Never repeat an n-gram of this size; 0 disables. [default: 0]",
    rich_help_panel=SAMPLING_PANEL, show_default=False)]
SeedOpt = Annotated[Optional[int], typer.Option(
    "--seed", help="Random seed for reproducible sampling (sample i uses seed+i).", rich_help_panel=SAMPLING_PANEL,
    show_default=False)]
StopOpt = Annotated[Optional[list[str]], typer.Option(
    "--stop", help="Stop when this string is generated (not printed). Repeatable; \\n and \\t escapes allowed.",
    rich_help_panel=SAMPLING_PANEL, show_default=False)]
NOpt = Annotated[Optional[int], typer.Option(
    "--n", "-n", help="Number of independent samples. [default: 1]", rich_help_panel=SAMPLING_PANEL,
    show_default=False)]


def unescape(text: str) -> str:
    """``--stop "\\n\\n"`` means two newlines, as users type it in a shell."""
    return text.replace("\\\\", "\x00").replace("\\n", "\n").replace("\\t", "\t").replace("\\r", "\r").replace(
        "\x00", "\\")


def sampling_params(settings, **flags) -> SamplingParams:
    """Built-in defaults < config file < LLMCLI_* env < flags; validated once by SamplingParams."""
    values = dict(settings.sampling)
    for key, value in flags.items():
        if value is not None:
            values[key] = value
    if "stop" in values and values["stop"] is not None:
        values["stop"] = tuple(unescape(s) for s in values["stop"])
    return SamplingParams(**values)


def backend_options(settings, *, backend=None, device=None, dtype=None, ctx=None, threads=None, gpu_layers=None,
                    verbose=False, allow_pickle=False, trust_remote_code=False, compile=False, api_key=None):
    from llmcli.backends.select import BackendOptions, normalize_backend
    from llmcli.config import DEFAULT_CTX_CAP

    g = settings.general
    ctx = ctx if ctx is not None else g.get("ctx", DEFAULT_CTX_CAP)
    if ctx < 0:
        raise UsageError(f"invalid --ctx {ctx}: must be >= 0")
    if threads is not None and threads < 1:
        raise UsageError(f"invalid --threads {threads}: must be >= 1")
    if gpu_layers is not None and gpu_layers < -1:
        raise UsageError(f"invalid --gpu-layers {gpu_layers}: must be >= -1 (-1 = all layers)")
    from llmcli.backends.torch_env import parse_device, parse_dtype

    parse_dtype(dtype or g.get("dtype"))  # validated here, before any model is loaded
    parse_device(device or g.get("device"))
    return BackendOptions(
        backend=normalize_backend(backend or g.get("backend", "auto")),
        device=device or g.get("device"),
        dtype=dtype or g.get("dtype"),
        ctx=ctx or None,
        threads=threads or g.get("threads"),
        gpu_layers=gpu_layers,
        verbose=verbose,
        library_logs=_debug_env(),
        allow_pickle=allow_pickle,
        trust_remote_code=trust_remote_code,
        compile=compile,
        api_key=api_key,
    )


def _debug_env() -> bool:
    import os

    return os.environ.get("LLMCLI_DEBUG", "") not in ("", "0")


def read_stdin_text() -> str | None:
    """Piped stdin as text, or None when stdin is a terminal or absent.

    Invalid UTF-8 is not fatal (think `git diff` of a Latin-1 file): the bad bytes
    become U+FFFD and a warning says so on stderr."""
    stream = sys.stdin
    if stream is None or stream.closed:
        return None
    try:
        if stream.isatty():
            return None
    except ValueError:
        return None
    data = stream.buffer.read() if hasattr(stream, "buffer") else stream.read().encode()
    if not data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        from llmcli.output import warn

        warn(f"stdin is not valid UTF-8 (first bad byte at offset {e.start}); invalid bytes were replaced by U+FFFD")
        return data.decode("utf-8", errors="replace")


def load_model(model: str | None, settings, opts):
    """Resolve the model argument and load a backend for it; -v explains the choice on stderr."""
    from llmcli.backends.select import load_backend
    from llmcli.output import info, warn
    from llmcli.store.resolve import resolve

    ref = resolve(model, configured=settings.general.get("model"), warn=warn)
    backend = load_backend(ref, opts)
    if opts.verbose:
        i = backend.info
        info(f"model: {ref.display} ({ref.format}) | backend: {i.backend} | device: {i.device} | dtype: {i.dtype} | "
             f"context: {backend.n_ctx} | why: {i.reason}")
    _touch(ref)
    return ref, backend


def _touch(ref) -> None:
    """Update the store's "last used" time; bookkeeping never fails a run (a locked or read-only
    registry only loses this timestamp)."""
    from llmcli.errors import LlmcliError
    from llmcli.store.modelstore import ModelStore

    if ref.origin == "store":
        try:
            ModelStore().touch(ref.name)
        except LlmcliError:
            pass
