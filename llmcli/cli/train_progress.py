"""Training progress on stderr: a rich bar on a terminal (step, epoch, smoothed loss, learning rate,
tokens/s, ETA); elsewhere one line when training starts and one per validation, so logs stay short."""

from __future__ import annotations

from contextlib import contextmanager


class _Lines:
    def __init__(self, info):
        self.info = info

    def started(self, total: int, n_train: int, n_val: int) -> None:
        self.info(f"training: {total} steps, {n_train} training / {n_val} validation example(s)")

    def step(self, s) -> None:
        pass

    def val(self, when: str, loss: float) -> None:
        self.info(f"validation loss {when}: {loss:.4f}")


class _Bar(_Lines):
    def __init__(self, info, progress):
        super().__init__(info)
        self.progress = progress
        self.task = None

    def started(self, total: int, n_train: int, n_val: int) -> None:
        self.task = self.progress.add_task("training", total=total, epoch="", loss="", lr="", speed="")

    def step(self, s) -> None:
        self.progress.update(self.task, completed=s.step, epoch=f"epoch {s.epoch}", loss=f"loss {s.smoothed:.3f}",
                             lr=f"lr {s.lr:.2e}", speed=f"{s.tokens_per_s:.0f} tok/s")

    def val(self, when: str, loss: float) -> None:
        self.progress.console.print(f"validation loss {when}: {loss:.4f}")


@contextmanager
def progress(stream):
    from llmcli.output import color_allowed, info

    if not color_allowed(stream):
        yield _Lines(info)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from llmcli.output import stderr_console

    cols = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[epoch]}"),
            TextColumn("{task.fields[loss]}"), TextColumn("{task.fields[lr]}"), TextColumn("{task.fields[speed]}"),
            TimeRemainingColumn())
    with Progress(*cols, console=stderr_console(), transient=False) as p:
        yield _Bar(info, p)
