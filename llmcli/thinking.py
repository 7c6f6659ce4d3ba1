"""Separate a reasoning model's thinking from its answer in a token stream.

Markers such as ``<think>`` may arrive split across tokens, so the filter holds
back only the characters that could still be the start of a marker."""

from __future__ import annotations

from llmcli.backends.textstream import held_suffix_len

DEFAULT_MARKERS = ("<think>", "</think>")


class ThinkFilter:
    """Feed text chunks; get back ``(is_thinking, text)`` pieces in order."""

    def __init__(self, open_marker: str = DEFAULT_MARKERS[0], close_marker: str = DEFAULT_MARKERS[1],
                 start_thinking: bool = False):
        self.open = open_marker
        self.close = close_marker
        self.thinking = start_thinking
        self.pending = ""

    def feed(self, text: str) -> list[tuple[bool, str]]:
        out: list[tuple[bool, str]] = []
        buf = self.pending + text
        while True:
            marker = self.close if self.thinking else self.open
            i = buf.find(marker)
            if i == -1:
                break
            if i:
                out.append((self.thinking, buf[:i]))
            buf = buf[i + len(marker):]
            self.thinking = not self.thinking
        marker = self.close if self.thinking else self.open
        hold = held_suffix_len(buf, [marker])
        ready = buf[: len(buf) - hold]
        self.pending = buf[len(buf) - hold:] if hold else ""
        if ready:
            out.append((self.thinking, ready))
        return out

    def flush(self) -> list[tuple[bool, str]]:
        out = [(self.thinking, self.pending)] if self.pending else []
        self.pending = ""
        return out


def strip_thinking(text: str, open_marker: str = DEFAULT_MARKERS[0], close_marker: str = DEFAULT_MARKERS[1],
                   start_thinking: bool = False) -> str:
    """The answer part of a finished reply, for storing in chat history."""
    f = ThinkFilter(open_marker, close_marker, start_thinking)
    parts = f.feed(text) + f.flush()
    return "".join(t for thinking, t in parts if not thinking).lstrip("\n") if any(
        thinking for thinking, _ in parts) else text
