"""Download progress on stderr with rich (bytes, speed, ETA), as a tqdm-compatible class that
huggingface_hub's ``hf_hub_download(tqdm_class=...)`` instantiates once per file.

Silent when stderr is not a terminal, with ``--quiet``, or with TERM=dumb."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager


class SilentBar:
    """Accepts the tqdm calls huggingface_hub makes (plain HTTP and Xet downloads) and shows nothing."""

    disable = False
    pos = 0

    def __init__(self, *args, **kwargs):
        self.n = kwargs.get("initial", 0) or 0
        self._total = kwargs.get("total")
        self.desc = kwargs.get("desc") or ""

    @property
    def total(self):
        return self._total

    @total.setter
    def total(self, value):
        self._total = value
        self._on_total()

    def _on_total(self):
        pass

    def update(self, n=1):
        self.n += n or 0

    def update_transfer(self, n=1):
        pass  # network bytes (Xet dedup/compression); the bar follows file bytes

    def close(self):
        pass

    def __getattr__(self, name):
        # set_postfix_str, set_transfer_postfix_str, refresh, clear, …: nothing to show.
        if name.startswith("__"):
            raise AttributeError(name)
        return lambda *args, **kwargs: None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def progress_enabled(quiet: bool) -> bool:
    if quiet or os.environ.get("TERM") == "dumb":
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


@contextmanager
def download_progress(quiet: bool = False):
    """Yields a tqdm-compatible class for huggingface_hub; rich bars live while the block runs."""
    if not progress_enabled(quiet):
        yield SilentBar
        return
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                               TransferSpeedColumn)

    from llmcli.output import stderr_console

    progress = Progress(TextColumn("{task.description}", style="bold"), BarColumn(), DownloadColumn(),
                        TransferSpeedColumn(), TimeRemainingColumn(), console=stderr_console(), transient=False,
                        refresh_per_second=8)

    class RichBar(SilentBar):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            desc = self.desc or "download"
            if len(desc) > 48:
                desc = "…" + desc[-47:]
            self.task = progress.add_task(desc, total=self.total, completed=self.n)

        def _on_total(self):
            if hasattr(self, "task"):
                progress.update(self.task, total=self.total)

        def update(self, n=1):
            super().update(n)
            progress.update(self.task, completed=self.n)

    with progress:
        yield RichBar
