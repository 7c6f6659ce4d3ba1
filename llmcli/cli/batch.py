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


def _plan(lines: Iterable[Line], n: int, resume: Resume, make_prompt, tally: Tally, progress: Progress):
    """(line, prompt, error, sample indices to run) per line still to answer, in input order."""
    for line in lines:
        tally.lines = line.number
        todo = [i for i in range(n) if (line.number, i) not in resume.done]
        if not todo:
            tally.skipped += 1
            progress.update(tally)
            continue
        if line.error:
            yield line, None, line.error, todo
            continue
        try:
            yield line, make_prompt(line.text), None, todo
        except LlmcliError as e:
            _reraise_output(e)
            yield line, None, e.message, todo


def _reraise_output(e: LlmcliError) -> None:
    from llmcli.output import OutputError

    if isinstance(e, OutputError):
        raise e


class _Recorder:
    """Writes a line's records and keeps the tally, the run log and the progress line."""

    def __init__(self, engine, ref, params, write, log, tally: Tally, progress: Progress):
        self.engine, self.ref, self.params, self._write = engine, ref, params, write
        self.log, self.tally, self.progress = log, tally, progress

    def reply(self, line: Line, index: int, reply, last: bool) -> bool:
        """Write one sample's record; False when it failed (its line then gets no more records)."""
        from llmcli.cli.generate import result_record

        if reply.interrupted:
            raise KeyboardInterrupt
        if reply.error is not None:  # a stream that broke mid-reply (a server gone): the line failed
            self.error(line, reply.error.message)
            return False
        self._write({"line": line.number, **result_record(reply, model=self.ref.display,
                                                          backend=self.engine.name, index=index)})
        self.log.reply(reply, sample=index, prompt=line.text)
        if last:
            self.tally.answered += 1
            self._done()
        return True

    def error(self, line: Line, message: str) -> None:
        self._write({"line": line.number, "error": message})
        self.tally.failed += 1
        self._done()

    def _done(self) -> None:
        self.log.flush()
        self.progress.update(self.tally)


def sample_params(params, base: int, line: Line, index: int):
    return params.replace(seed=line_seed(base, line.number, index, params.n), n=1)


def run_batch(engine, ref, params, lines: Iterable[Line], *, make_prompt, resume: Resume, log,
              progress: Progress, write, parallel: int = 1) -> Tally:
    """Generate for each line, records in input order; ``make_prompt(text)`` builds (and checks) one
    line's Prompt, ``write(record)`` prints one record. ``parallel`` > 1: that many sequences decoded
    together (``engine.decoder``). Returns the tally."""
    from llmcli.output import NullSink
    from llmcli.streaming import run_stream, think_filter_for

    base = params.seed if params.seed is not None else (
        resume.base_seed if resume.base_seed is not None else random.randrange(2**31))
    tally = Tally()
    rec = _Recorder(engine, ref, params, write, log, tally, progress)
    plan = _plan(lines, params.n, resume, make_prompt, tally, progress)
    if parallel > 1:
        _run_parallel(engine, params, plan, rec, base, parallel)
        return tally
    for line, prompt, error, todo in plan:
        if error is not None:
            rec.error(line, error)
            continue
        for i in todo:
            try:
                reply = run_stream(engine, prompt, sample_params(params, base, line, i), NullSink(),
                                   think_filter_for(prompt.text if prompt.messages else None))
            except LlmcliError as e:
                _reraise_output(e)
                rec.error(line, e.message)
                break
            if not rec.reply(line, i, reply, last=i == todo[-1]):
                break
    return tally


class _Submitted:
    """What ``run_stream`` needs of a backend, for one sequence already running in a decoder."""

    def __init__(self, engine, seq):
        self.name, self.capabilities, self._seq = engine.name, engine.capabilities, seq

    def stream(self, _prompt, _params):
        return self._seq.events()


def sample_sources(engine, prompt, params_list: list) -> list:
    """``--n``: what ``run_stream`` reads each sample from — the engine itself, sample after sample, or,
    where the backend runs samples together (``capabilities.samples_together``; a server: concurrent
    requests), a sequence already submitted to one decoder: all are generated at once and still read
    in order (sample 0 streams as it arrives). ``engine.close()`` cancels what is still running."""
    caps = engine.capabilities
    if not caps.samples_together or not 1 < len(params_list) <= caps.parallel or \
            params_list[0].reasoning_budget is not None:
        return [engine] * len(params_list)
    decoder = engine.decoder(len(params_list))
    return [_Submitted(engine, decoder.submit(prompt, p)) for p in params_list]


def _run_parallel(engine, params, plan, rec: _Recorder, base: int, n: int) -> None:
    """Continuous batching: a free slot takes the next sample at once (``decoder.admit``), while
    records are still written in input order (a finished sequence waits in its buffer)."""
    from collections import deque

    from llmcli.output import NullSink
    from llmcli.streaming import run_stream, think_filter_for

    decoder = engine.decoder(n)
    jobs: deque = deque()  # (line, index, Sequence, last) or (line, None, error message, True), in order
    staged: deque = deque()  # (line, prompt, index, last) waiting for a slot
    planned = iter(plan)

    def admit() -> None:
        while decoder.free():
            if not staged:
                item = next(planned, None)
                if item is None:
                    return
                line, prompt, error, todo = item
                if error is not None:
                    jobs.append((line, None, error, True))
                    continue
                staged.extend((line, prompt, i, i == todo[-1]) for i in todo)
            line, prompt, i, last = staged.popleft()
            try:
                jobs.append((line, i, (prompt, decoder.submit(prompt, sample_params(params, base, line, i))), last))
            except LlmcliError as e:
                _reraise_output(e)
                jobs.append((line, None, e.message, True))

    decoder.admit = admit
    failed = None  # the line whose sample failed: its other samples write no records (as with --parallel 1)
    try:
        admit()
        while jobs:
            line, i, what, last = jobs.popleft()
            if line is failed:
                pass
            elif i is None:
                rec.error(line, what)
            else:
                prompt, seq = what
                try:  # a request's own failure (a server's HTTP error) is that line's error record
                    reply = run_stream(_Submitted(engine, seq), prompt, seq.params, NullSink(),
                                       think_filter_for(prompt.text if prompt.messages else None))
                    ok = rec.reply(line, i, reply, last)
                except LlmcliError as e:
                    _reraise_output(e)
                    rec.error(line, e.message)
                    ok = False
                failed = failed if ok else line
            if not jobs:
                admit()
    finally:
        decoder.close()


def check_args(each_line: bool, resume: str | None, files, params, parallel: int) -> Resume:
    """Flag combinations, and the --resume file read, before stdin is touched or a model loaded."""
    if not each_line:
        for flag, given in (("--resume", resume is not None), ("--parallel", parallel > 1)):
            if given:
                raise UsageError(f"{flag} needs --each-line", "add --each-line")
        return Resume(set(), None)
    if parallel > 1 and params.reasoning_budget is not None:
        raise UsageError("--reasoning-budget cannot be combined with --parallel", "use --parallel 1")
    if "-" in files:
        raise UsageError("-f - cannot be used with --each-line: stdin carries the prompts", "give a file path")
    return read_resume(resume, params.n) if resume is not None else Resume(set(), None)


def check_parallel(engine, parallel: int) -> None:
    """After loading: the backend must decode that many sequences together."""
    if parallel > engine.capabilities.parallel:
        raise UsageError(f"the {engine.name} backend runs one sequence at a time here: --parallel {parallel} needs "
                         "llama.cpp, torch with a Llama-architecture model and no --compile, or a server that "
                         "batches requests" if engine.capabilities.parallel == 1 else
                         f"the {engine.name} backend decodes at most {engine.capabilities.parallel} sequences "
                         "together", "use --parallel 1 (docs/usage.md says which backends and servers run "
                         "sequences together)")


def run(engine, ref, params, *, make_prompt, resume: Resume, log, parallel: int = 1) -> None:
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
                          resume=resume, log=log, progress=progress, write=write, parallel=parallel)
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
