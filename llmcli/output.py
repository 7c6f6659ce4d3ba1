"""Everything that reaches the terminal: stdout carries generated text only;
stderr carries progress, stats, warnings and errors. Colour only on a TTY without NO_COLOR.

stdout is wrapped once (``guard_stdio``) so that a failed write becomes a typed exception at the
place it happens: ``OutputClosed`` when the reader left (``| head``: not an error, exit 0) and
``OutputError`` otherwise (``>/dev/full``, ``>&-``: "cannot write output: …", exit 1). Neither is
an OSError, so no library's own EPIPE handling (Click's exits 1) gets in the way.
"""

from __future__ import annotations

import errno
import io
import json
import os
import sys
from functools import lru_cache

from llmcli.errors import LlmcliError


class OutputClosed(Exception):
    """stdout's reader went away (a closed pipe): the command stops quietly."""


class OutputError(LlmcliError):
    """stdout cannot be written (full disk, closed descriptor, I/O error)."""


def _translate(e: OSError) -> Exception:
    if e.errno in (errno.EPIPE, errno.ECONNRESET):
        return OutputClosed()
    hint = "free some disk space" if e.errno == errno.ENOSPC else "check where stdout goes"
    return OutputError(f"cannot write output: {e.strerror or e}", hint)


class _GuardedStdout:
    """Delegates to the real stdout; its write errors become OutputClosed / OutputError."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, s):
        try:
            return self._stream.write(s)
        except OSError as e:
            raise _translate(e) from None

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        try:
            self._stream.flush()
        except OSError as e:
            raise _translate(e) from None

    def __getattr__(self, name):
        return getattr(self._stream, name)


class _ClosedStdout(io.TextIOBase):
    """What stdout is when the process started with descriptor 1 closed (``>&-``)."""

    def write(self, s):
        raise OSError(errno.EBADF, "stdout is closed")

    def isatty(self) -> bool:
        return False


def guard_stdio() -> None:
    """Called once by the CLI entry point. A closed descriptor 0-2 is reopened on /dev/null so that
    no file opened later takes its number (a model file as "stdout" would be written over)."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")
    if not isinstance(sys.stdout, _GuardedStdout):
        sys.stdout = _GuardedStdout(sys.stdout if sys.stdout is not None else _ClosedStdout())


def silence_stdout() -> None:
    """After a failed write: point descriptor 1 at /dev/null, so the interpreter's own flush at
    exit does not fail a second time with a traceback-like message."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.close(null)
    except OSError:
        pass


def color_allowed(stream) -> bool:
    if os.environ.get("NO_COLOR", "") != "":
        return False
    if os.environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


@lru_cache(maxsize=1)
def stderr_console():
    from rich.console import Console

    err = sys.stderr
    return Console(file=err, stderr=True, highlight=False, no_color=not color_allowed(err),
                   force_terminal=color_allowed(err) or None, soft_wrap=True)


def print_error(message: str, hint: str | None = None) -> None:
    line = f"error: {message}"
    if hint:
        line += f" (hint: {hint})"
    if color_allowed(sys.stderr):
        line = f"\x1b[31merror:\x1b[0m {line[len('error: '):]}"
    _to_stderr(line + "\n")


def warn(message: str) -> None:
    prefix = "\x1b[33mwarning:\x1b[0m" if color_allowed(sys.stderr) else "warning:"
    _to_stderr(f"{prefix} {message}\n")


def info(message: str) -> None:
    _to_stderr(message + "\n")


def _to_stderr(text: str) -> None:
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except OSError:
        pass  # nowhere left to report to; the exit status still tells


class TextSink:
    """Writes streamed text to stdout immediately (flushes every chunk), and
    thinking text where ``--think`` sends it."""

    DIM = "\x1b[2m"
    RESET = "\x1b[0m"

    def __init__(self, think_mode: str = "show", out=None, err=None):
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.think_mode = think_mode
        self.dim = color_allowed(self.out)
        self.ends_with_newline = True
        self.wrote_any = False

    def answer(self, text: str) -> None:
        if text:
            self.out.write(text)
            self.out.flush()
            self.ends_with_newline = text.endswith("\n")
            self.wrote_any = True

    def thinking(self, text: str) -> None:
        if not text or self.think_mode == "hide":
            return
        if self.think_mode == "stderr":
            self.err.write(text)
            self.err.flush()
            return
        self.out.write(f"{self.DIM}{text}{self.RESET}" if self.dim else text)
        self.out.flush()
        self.ends_with_newline = text.endswith("\n")
        self.wrote_any = True

    def end(self) -> None:
        if not self.ends_with_newline or not self.wrote_any:
            self.out.write("\n")
        self.out.flush()
        self.ends_with_newline = True
        self.wrote_any = False


class NullSink:
    """For --json/--jsonl: the text goes into the record, not onto the terminal."""

    def answer(self, text: str) -> None:
        pass

    def thinking(self, text: str) -> None:
        pass

    def end(self) -> None:
        pass


def dumps(obj) -> str:
    return json.dumps(obj, ensure_ascii=False)


def format_stats(stats, *, label: str = "") -> str:
    head = f"[{label}] " if label else ""
    return (
        f"{head}prompt: {stats.prompt_tokens} tokens ({stats.prompt_tokens_processed} processed, "
        f"{stats.prompt_tokens_per_second:.1f} tok/s) | generated: {stats.generated_tokens} tokens "
        f"({stats.generation_tokens_per_second:.1f} tok/s) | time to first token: "
        f"{stats.time_to_first_token * 1000:.0f} ms | finish: {stats.finish_reason}"
    )
