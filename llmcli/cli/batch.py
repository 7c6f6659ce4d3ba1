"""``generate --each-line``: every stdin line is one prompt; the model is loaded once and one JSONL
record per sample is written to stdout, in input order (docs/usage.md, "Batch mode").

- Line numbers count every input line from 1 (blank lines are skipped but keep their number).
- A line that fails (not UTF-8, too long for the window, a backend error) becomes an error record
  ``{"line": N, "error": "…"}``; the run goes on and ends with exit status 1.
- Sample i of line k uses seed ``(S + (k−1)·n + i) mod 2^32−1`` (S: ``--seed`` or a random base):
  a record can be regenerated alone with that seed, whatever ran before it.
- ``--resume FILE`` skips the samples FILE already holds (error records included), so
  ``--resume out.jsonl >> out.jsonl`` after a killed run gives the file an uninterrupted run gives.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from llmcli.errors import LlmcliError, UsageError
from llmcli.params import SEED_MAX

SEED_SPAN = SEED_MAX + 1


@dataclass(frozen=True)
class Line:
    number: int
    text: str | None  # None: see error
    error: str | None = None


def split_lines(stream: Iterable[bytes]) -> Iterator[Line]:
    """Input lines as Lines, blank ones skipped; invalid UTF-8 is an error line (never replaced:
    a prompt silently changed would give an answer to a question nobody asked)."""
    for number, raw in enumerate(stream, 1):
        raw = raw.rstrip(b"\n").rstrip(b"\r")
        if not raw.strip():
            continue
        try:
            yield Line(number, raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            yield Line(number, None, f"line {number} is not valid UTF-8 (byte {e.start + 1})")


def line_seed(base: int, line: int, index: int, n: int) -> int:
    return (base + (line - 1) * n + index) % SEED_SPAN


@dataclass
class Resume:
    done: set[tuple[int, int]]  # (line, sample index) already in the file
    base_seed: int | None  # the base seed the file was made with, when a record shows it


def read_resume(path: str, n: int) -> Resume:
    """The records of an earlier run's output; a damaged file is an error naming the line."""
    import os

    try:
        with open(os.path.expanduser(path), "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return Resume(set(), None)  # nothing answered yet: the first run of a resumable script
    except OSError as e:
        raise UsageError(f"cannot read the --resume file {path}: {e.strerror or e}") from None
    if data and not data.endswith(b"\n"):
        raise UsageError(f"the last line of the --resume file {path} is incomplete (the run was cut while "
                         "writing it)", "delete that line, then resume")
    done: set[tuple[int, int]] = set()
    base = None
    for i, raw in enumerate(data.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
            line, index = rec["line"], rec.get("index", 0)
            if not (isinstance(line, int) and isinstance(index, int)) or isinstance(line, bool):
                raise TypeError
        except (ValueError, KeyError, TypeError, AttributeError):
            raise UsageError(f"line {i} of the --resume file {path} is not a record of llmcli generate --each-line",
                             "give the file an earlier --each-line run wrote") from None
        done.add((line, index))
        if base is None and isinstance(rec.get("seed"), int) and "error" not in rec:
            base = (rec["seed"] - (line - 1) * n - index) % SEED_SPAN
    return Resume(done, base)


@dataclass
class Tally:
    answered: int = 0
    failed: int = 0
    skipped: int = 0
    lines: int = 0


class Progress:
    """A rich progress line on a terminal's stderr; otherwise nothing until the summary."""

    def __init__(self, enabled: bool):
        self._bar = None
        if enabled:
            from rich.progress import Progress as Bar, SpinnerColumn, TextColumn, TimeElapsedColumn

            from llmcli.output import stderr_console

            self._bar = Bar(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                            console=stderr_console(), transient=True)
            self._bar.start()
            self._task = self._bar.add_task("starting")

    def update(self, tally: Tally) -> None:
        if self._bar is not None:
            self._bar.update(self._task, description=f"line {tally.lines}: {tally.answered} answered, "
                                                     f"{tally.failed} failed, {tally.skipped} skipped")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def run_batch(engine, ref, params, lines: Iterable[Line], *, make_prompt, resume: Resume, log,
              progress: Progress, write) -> Tally:
    """Generate for each line in order; ``make_prompt(text)`` builds (and checks) one line's Prompt,
    ``write(record)`` prints one record. Returns the tally; a Ctrl-C stops after the current record."""
    from llmcli.cli.generate import result_record
    from llmcli.output import NullSink
    from llmcli.streaming import run_stream, think_filter_for

    base = params.seed if params.seed is not None else (
        resume.base_seed if resume.base_seed is not None else random.randrange(2**31))
    tally = Tally()
    for line in lines:
        tally.lines = line.number
        todo = [i for i in range(params.n) if (line.number, i) not in resume.done]
        if not todo:
            tally.skipped += 1
            progress.update(tally)
            continue
        try:
            if line.error:
                raise UsageError(line.error)
            prompt = make_prompt(line.text)
            for i in todo:
                sample = params.replace(seed=line_seed(base, line.number, i, params.n), n=1)
                reply = run_stream(engine, prompt, sample, NullSink(), think_filter_for(
                    prompt.text if prompt.messages else None))
                if reply.interrupted:
                    raise KeyboardInterrupt
                write({"line": line.number, **result_record(reply, model=ref.display, backend=engine.name,
                                                            index=i)})
                log.reply(reply, sample=i, prompt=line.text)
            tally.answered += 1
        except LlmcliError as e:
            from llmcli.output import OutputError

            if isinstance(e, OutputError):
                raise
            write({"line": line.number, "error": e.message if hasattr(e, "message") else str(e)})
            tally.failed += 1
        log.flush()
        progress.update(tally)
    return tally


def check_args(each_line: bool, resume: str | None, files, n: int) -> Resume:
    """Flag combinations, and the --resume file read, before stdin is touched or a model loaded."""
    if not each_line:
        if resume is not None:
            raise UsageError("--resume needs --each-line", "add --each-line")
        return Resume(set(), None)
    if "-" in files:
        raise UsageError("-f - cannot be used with --each-line: stdin carries the prompts", "give a file path")
    return read_resume(resume, n) if resume is not None else Resume(set(), None)


def run(engine, ref, params, *, make_prompt, resume: Resume, log) -> None:
    """The batch over stdin, then a one-line summary on stderr; some line failed → exit 1."""
    from llmcli.output import dumps, info

    def write(record: dict) -> None:
        sys.stdout.write(dumps(record) + "\n")
        sys.stdout.flush()

    from llmcli.cli.progress import progress_enabled

    progress = Progress(progress_enabled(False))
    started = now()
    try:
        tally = run_batch(engine, ref, params, split_lines(stdin_lines()), make_prompt=make_prompt,
                          resume=resume, log=log, progress=progress, write=write)
    finally:
        progress.close()
    info(summary(tally, now() - started))
    if tally.failed:
        raise LlmcliError(f"{tally.failed} line(s) failed", "their records hold the errors")


def summary(tally: Tally, seconds: float) -> str:
    skipped = f", {tally.skipped} skipped (--resume)" if tally.skipped else ""
    return f"{tally.answered} line(s) answered, {tally.failed} failed{skipped} in {seconds:.1f} s"


def stdin_lines() -> Iterator[bytes]:
    stream = sys.stdin
    if stream is None or stream.closed:
        raise UsageError("--each-line reads prompts from stdin, and there is none", "pipe a file: … < prompts.txt")
    try:
        if stream.isatty():
            raise UsageError("--each-line reads prompts from stdin, not from a terminal",
                             "pipe a file: llmcli generate --each-line < prompts.txt")
    except ValueError:
        pass
    return iter(stream.buffer.readline, b"")


def now() -> float:
    return time.perf_counter()
