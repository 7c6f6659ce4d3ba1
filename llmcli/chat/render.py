"""``--markdown``: stream a live plain-text preview, then print the finished reply rendered
by rich. Colour only when stdout is a terminal and NO_COLOR is unset."""

from __future__ import annotations

import sys
import time

from llmcli.output import color_allowed


class MarkdownSink:
    """A sink for run_stream: the preview is transient (erased), the Markdown rendering stays."""

    REFRESH_S = 0.08

    def __init__(self, think_mode: str = "show", out=None, err=None):
        from rich.console import Console
        from rich.live import Live

        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.think_mode = think_mode
        colour = color_allowed(self.out)
        self.console = Console(file=self.out, no_color=not colour, force_terminal=True if colour else None,
                               highlight=False)
        self.answer_parts: list[str] = []
        self.thinking_parts: list[str] = []
        self._live = Live(console=self.console, transient=True, auto_refresh=False, vertical_overflow="crop")
        self._started = False
        self._last = 0.0

    def _preview(self):
        from rich.text import Text

        height = max(self.console.size.height - 2, 3)
        text = Text()
        if self.thinking_parts and self.think_mode == "show":
            text.append("".join(self.thinking_parts), style="dim")
        text.append("".join(self.answer_parts))
        lines = text.wrap(self.console, self.console.size.width)
        if len(lines) > height:
            lines = lines[-height:]
        out = Text("\n").join(lines)
        return out

    def _refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.REFRESH_S:
            return
        self._last = now
        if not self._started:
            self._live.start()
            self._started = True
        self._live.update(self._preview(), refresh=True)

    def answer(self, text: str) -> None:
        if text:
            self.answer_parts.append(text)
            self._refresh()

    def thinking(self, text: str) -> None:
        if not text or self.think_mode == "hide":
            return
        if self.think_mode == "stderr":
            self.err.write(text)
            self.err.flush()
            return
        self.thinking_parts.append(text)
        self._refresh()

    def abort(self) -> None:
        """The turn failed before finishing: take the preview away, print nothing."""
        if self._started:
            self._live.stop()
            self._started = False

    def end(self) -> None:
        from rich.markdown import Markdown
        from rich.text import Text

        if self._started:
            self._live.stop()
            self._started = False
        if self.thinking_parts and self.think_mode == "show":
            self.console.print(Text("".join(self.thinking_parts).strip("\n"), style="dim"))
        answer = "".join(self.answer_parts).strip("\n")
        if answer:
            self.console.print(Markdown(answer))
        else:
            self.console.print()
        self.out.flush()
