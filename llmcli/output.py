"""Everything that reaches the terminal: stdout carries generated text only;
stderr carries progress, stats, warnings and errors. Colour only on a TTY without NO_COLOR."""

from __future__ import annotations

import json
import os
import sys
from functools import lru_cache


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
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def warn(message: str) -> None:
    prefix = "\x1b[33mwarning:\x1b[0m" if color_allowed(sys.stderr) else "warning:"
    sys.stderr.write(f"{prefix} {message}\n")
    sys.stderr.flush()


def info(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


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
