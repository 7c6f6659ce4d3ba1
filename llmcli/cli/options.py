"""Options shared by several commands, generated from the parameter table (llmcli/params.py) so
every command spells and documents them the same way, and the functions that turn flags + config +
env into typed, validated values."""

from __future__ import annotations

import functools
import inspect
import sys
import typing
from typing import Annotated, Optional

import typer

from llmcli import params as P
from llmcli.backends.base import SamplingParams
from llmcli.cli.fastcomplete import complete_model
from llmcli.errors import UsageError

MODEL_PANEL = P.MODEL
SAMPLING_PANEL = P.SAMPLING
OUTPUT_PANEL = P.OUTPUT
INPUT_PANEL = P.INPUT


COMPLETERS = {"model": complete_model}  # shell completion for a table row's option


def option_type(p: P.Param, help: str | None = None):
    """The Typer option of a table row. Values arrive as text (a list for --stop) and are parsed by
    the table, so a bad value gets the same message from a flag, the config, the environment or /set."""
    kind = Optional[list[str]] if p.kind is tuple else Optional[str]
    metavar = p.metavar or ("INTEGER" if p.kind is int else "NUMBER" if p.kind is float else "TEXT")
    return Annotated[kind, typer.Option(*p.flags, help=p.help_text(help), metavar=metavar,
                                        rich_help_panel=p.panel, show_default=False,
                                        autocompletion=COMPLETERS.get(p.name))]


def table_options(*names: str, help: dict[str, str] | None = None):
    """Give a Typer command the table's options NAMES; the command receives them, still unparsed,
    as one ``flags`` dict (``parse_flags`` turns it into typed values). A new table row reaches every command that
    lists its group (``P.SAMPLING_NAMES``, ``P.RUNTIME_NAMES``) without touching the command."""
    names = tuple(dict.fromkeys(names))

    def decorate(func):
        sig = inspect.signature(func)
        hints = typing.get_type_hints(func, include_extras=True)
        own = [q.replace(annotation=hints.get(q.name, q.annotation)) for q in sig.parameters.values()
               if q.name != "flags"]
        added = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=None,
                                   annotation=option_type(P.PARAMS[n], (help or {}).get(n))) for n in names]
        # Typer calls commands with keywords only; --help lists the table's options after the arguments.
        own = [q.replace(kind=inspect.Parameter.KEYWORD_ONLY) for q in own]
        n_args = 0
        while n_args < len(own) and _is_argument(own[n_args].annotation):
            n_args += 1
        params = own[:n_args] + added + own[n_args:]

        @functools.wraps(func)
        def command(**kwargs):
            flags = {n: kwargs.pop(n) for n in names}
            return func(**kwargs, flags=flags)

        command.__signature__ = sig.replace(parameters=params)
        command.__annotations__ = {q.name: q.annotation for q in params}
        return command
    return decorate


_ARGUMENT = type(typer.Argument())


def _is_argument(annotation) -> bool:
    return any(isinstance(m, _ARGUMENT) for m in getattr(annotation, "__metadata__", ()))


ModelOpt = option_type(P.PARAMS["model"])
BackendOpt = option_type(P.PARAMS["backend"])
ThreadsOpt = option_type(P.PARAMS["threads"])
ApiKeyOpt = option_type(P.PARAMS["api_key"])
AllowPickleOpt = Annotated[bool, typer.Option(
    "--allow-pickle", help="Allow loading pickle (.bin/.pt) weights, which can run code. Off by default.",
    rich_help_panel=MODEL_PANEL)]
TrustRemoteCodeOpt = Annotated[bool, typer.Option(
    "--trust-remote-code", help="Allow an HF model folder to run its own Python code. Off by default.",
    rich_help_panel=MODEL_PANEL)]
CompileOpt = Annotated[bool, typer.Option(
    "--compile", help="torch backend: static KV cache + torch.compile (GPU).", rich_help_panel=MODEL_PANEL)]
NoLogOpt = Annotated[bool, typer.Option(
    "--no-log", help="Do not record this run in the run log (`llmcli logs`; config: log = false).",
    rich_help_panel=OUTPUT_PANEL)]
VerboseOpt = Annotated[bool, typer.Option(
    "-v", "--verbose", help="Explain the backend choice and show tracebacks (LLMCLI_DEBUG=1 adds the "
    "llama.cpp/transformers logs).")]

unescape = P.unescape


def parse_flags(flags: dict) -> dict:
    """Flag text -> typed values (None where a flag was not given); errors name the flag. The one
    place command-line text becomes values: everything after it receives typed values."""
    out = {}
    for name, value in flags.items():
        p = P.PARAMS[name]
        if value is None:
            out[name] = None
        elif p.kind is tuple:
            out[name] = p.check(tuple(unescape(s) if p.escapes else s for s in value), p.flag)
        else:
            out[name] = p.parse(value, p.flag)
    return out


def setting(settings, given: dict, name: str):
    """Built-in default < config file < LLMCLI_* env < flag, for one typed value."""
    value = given.get(name)
    return value if value is not None else settings.get(name, P.PARAMS[name].default)


def sampling_params(settings, **given) -> SamplingParams:
    """Defaults < config < env < GIVEN (typed flag values; None = not given), as one SamplingParams,
    which also checks that seed + n − 1 is still a seed."""
    return SamplingParams(**{name: setting(settings, given, name) for name in P.SAMPLING_NAMES})


def backend_options(settings, given: dict | None = None, *, verbose=False, allow_pickle=False,
                    trust_remote_code=False, compile=False, **fixed):
    """BackendOptions from typed values: defaults < config < env < GIVEN flags < FIXED (values a command
    sets itself, e.g. tokenize's small window)."""
    from llmcli.backends.select import BackendOptions

    v = {n: setting(settings, given or {}, n) for n in ("backend", "device", "dtype", "ctx", "threads", "gpu_layers")}
    v.update(fixed)
    return BackendOptions(
        backend=v["backend"],
        device=v["device"],
        dtype=v["dtype"],
        ctx=v["ctx"] or None,
        threads=v["threads"],
        gpu_layers=v["gpu_layers"],
        verbose=verbose,
        library_logs=_debug_env(),
        allow_pickle=allow_pickle,
        trust_remote_code=trust_remote_code,
        compile=compile,
        api_key=setting(settings, given or {}, "api_key"),
    )


def _debug_env() -> bool:
    import os

    return os.environ.get("LLMCLI_DEBUG", "") not in ("", "0")


def read_stdin_bytes(limit: int = -1) -> bytes | None:
    """Piped stdin as bytes (at most ``limit`` when given), or None when stdin is a terminal,
    absent or empty."""
    stream = sys.stdin
    if stream is None or stream.closed:
        return None
    try:
        if stream.isatty():
            return None
    except ValueError:
        return None
    data = stream.buffer.read(limit) if hasattr(stream, "buffer") else stream.read(limit).encode()
    return data or None


def decode_text(data: bytes, source: str) -> str:
    """UTF-8 text; invalid UTF-8 is not fatal (think `git diff` of a Latin-1 file): the bad bytes
    become U+FFFD and a warning naming ``source`` says so on stderr."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        from llmcli.output import warn

        warn(f"{source} is not valid UTF-8 (first bad byte at offset {e.start}); invalid bytes were replaced by U+FFFD")
        return data.decode("utf-8", errors="replace")


def read_stdin_text() -> str | None:
    """Piped stdin as text (see ``decode_text``), or None when stdin is a terminal or absent."""
    data = read_stdin_bytes()
    return None if data is None else decode_text(data, "stdin")


def read_inputs(paths: tuple[str, ...], *, stdin: bool = True):
    """The -f files (in order; "-" is stdin, allowed once) and, unless a file took it, piped stdin
    text. The only place -f paths are read: afterwards commands hold Attachment values."""
    from llmcli.attachments import read_file

    if paths.count("-") > 1:
        raise UsageError("-f - (stdin) was given more than once", "stdin can be read once")
    if "-" in paths and not stdin:
        raise UsageError("-f - (stdin) cannot be used here: stdin carries the messages",
                         "give a file path, or use /file in the chat")
    files = [read_file(p, lambda: read_stdin_bytes() or b"") for p in paths]
    return files, (read_stdin_text() if stdin and "-" not in paths else None)


def load_model(model: str | None, settings, opts):
    """Resolve the model argument and load a backend for it; -v explains the choice on stderr."""
    from llmcli.backends.select import load_backend
    from llmcli.store.metadata import gguf_size
    from llmcli.output import info, warn
    from llmcli.store.resolve import resolve

    ref = resolve(model, configured=settings.general.get("model"), warn=warn)
    backend = load_backend(ref, opts, gguf_size=gguf_size)
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
