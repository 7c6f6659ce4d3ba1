"""Several sequences decoded together: the part every local backend's parallel decoder shares.

``SequenceDecoder`` owns the slots, continuous admission, and what happens to a sequence after
each decode step (pick its next id, hand it to ``drive``, free its slot when it ends); a backend
supplies only its native steps:

- ``_prefill(ids) -> (slot, evaluated, state)``: the prompt into a free slot's cache (the backend
  picks the slot, so it may reuse what one holds), how many ids it evaluated, and what the
  sampler needs for the last position;
- ``_new_sampler(params, seed, ids)``: one sequence's sampler (``core.Sampler``);
- ``_select(seq, state) -> id``: the sequence's next id from the state of its row;
- ``_decode(running) -> [state, …]``: one forward with the next id of every running sequence
  (``seq.last`` at position ``seq.pos``), a state per sequence, in order;
- ``_share(src, dst, length)``: copy a slot's first ``length`` positions to another;
- ``_close()``: free the native resources.

A finished sequence's slot keeps its keys/values until a prompt is put there: the next sample
of the same prompt may still copy them.

Each sequence keeps the single-sequence semantics: its ids go through ``textstream.drive``
(UTF-8, stop strings, max tokens, stats) exactly as ``LocalBackend.stream`` does; the consumer
reads its events with ``Sequence.events()``, which decodes more steps (for every sequence) when
this one has none buffered, so results can be consumed in submission order.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from llmcli.backends.base import Finish, SamplingParams, StreamEvent, prompt_ids
from llmcli.backends.core import open_stream
from llmcli.backends.textstream import drive
from llmcli.errors import BackendError


class Sequence:
    """One submitted prompt: its slot, sampler, and the events ``drive`` produced so far."""

    def __init__(self, decoder: SequenceDecoder, slot: int, sampler, params: SamplingParams, stats, n_prompt: int,
                 started: float):
        self._decoder = decoder
        self.slot = slot
        self.sampler = sampler
        self.params = params
        self.pos = n_prompt  # the next token's position
        self.last = -1  # the id to decode in the next step
        self.generated = 0
        self.done = False
        self._queue: deque[int] = deque()
        self._buffer: deque[StreamEvent] = deque()
        backend = decoder.backend
        self._drive = drive(self._source(), piece=backend._text_piece, is_end=backend.is_end, params=params,
                            stats=stats, clock=_clock_from(started))

    def _source(self) -> Iterator[int]:
        while self._queue:
            yield self._queue.popleft()

    def feed(self, token: int | None) -> None:
        """Hand ``drive`` the next sampled id (None: the window is full, end the source); buffer what it
        releases up to the event for that id, or up to the Finish."""
        if token is not None:
            self._queue.append(token)
            self.generated += 1
        while True:
            ev = next(self._drive)
            self._buffer.append(ev)
            if isinstance(ev, Finish):
                self.done = True
                return
            if ev.tokens:
                break
        limit = self.params.max_tokens
        if limit is not None and self.generated >= limit:
            self.feed_end()  # drive stops here without asking for another id: collect the Finish now

    def feed_end(self) -> None:
        while not self.done:
            ev = next(self._drive)
            self._buffer.append(ev)
            self.done = isinstance(ev, Finish)

    def events(self) -> Iterator[StreamEvent]:
        while True:
            while not self._buffer:
                self._decoder.step()
            ev = self._buffer.popleft()
            yield ev
            if isinstance(ev, Finish):
                return


def _clock_from(started: float) -> Callable[[], float]:
    """``drive``'s clock, whose first reading is ``started`` (when ``submit`` began): the time to first
    token then counts the prompt's evaluation, as in a single-sequence stream."""
    first = [started]
    return lambda: first.pop() if first else time.perf_counter()


class SequenceDecoder:
    """Up to ``n`` sequences on ``backend`` decoded together; ``admit`` is called whenever a slot
    is free after a step (the caller submits the next prompt there: continuous batching)."""

    def __init__(self, backend, n: int, n_ctx: int):
        self.backend = backend
        self.n = n
        self.n_ctx = n_ctx
        self._slots: list[Sequence | None] = [None] * n
        self._last: tuple[list[int], int, Any] | None = None  # (ids, slot, state) of the last prefill
        self.admit: Callable[[], None] = lambda: None

    # --- native steps (supplied by the backend's decoder) ------------------------------------------
    def _prefill(self, ids: list[int]) -> tuple[int, int, Any]:
        raise NotImplementedError  # pragma: no cover

    def _new_sampler(self, params: SamplingParams, seed: int, ids: list[int]):
        raise NotImplementedError  # pragma: no cover

    def _select(self, seq: Sequence, state: Any) -> int:
        raise NotImplementedError  # pragma: no cover

    def _decode(self, running: list[Sequence]) -> list[Any]:
        raise NotImplementedError  # pragma: no cover

    def _share(self, src: int, dst: int, length: int) -> None:
        raise NotImplementedError  # pragma: no cover

    def _close(self) -> None:
        raise NotImplementedError  # pragma: no cover

    # --- the shared part ---------------------------------------------------------------------------
    def free(self) -> int:
        return sum(s is None for s in self._slots)

    def submit(self, prompt, params: SamplingParams) -> Sequence:
        """Start ``prompt`` in a free slot and sample its first token. The prompt submitted just before,
        with no decode step since (``generate --n``: one prompt per sample), is not evaluated again:
        its keys/values are copied to the new slot (``_share``) and its logits reused, so the stats
        count the prompt once."""
        started = time.perf_counter()
        backend = self.backend
        ids = prompt_ids(prompt)
        stats = open_stream(backend, ids, params, n_ctx_train=backend.n_ctx_train)
        backend._check_ids(ids)
        backend.compiled(params.constraint)  # an unenforceable schema fails before any evaluation
        last = self._last
        if last is not None and last[0] == ids:
            src = last[1]
            slot, evaluated, state = (src if self._slots[src] is None else self._slots.index(None)), 0, last[2]
            if slot != src:
                self._share(src, slot, len(ids))
        else:
            self._last = None  # a prefill may reuse (and clear) the slot it pointed at, even if it fails
            slot, evaluated, state = self._prefill(ids)
            self._last = (ids, slot, state)
        stats.prompt_tokens_processed = evaluated
        seq = Sequence(self, slot, self._new_sampler(params, stats.seed, ids), params, stats, len(ids), started)
        self._slots[slot] = seq
        self._pick(seq, state)
        return seq

    def _pick(self, seq: Sequence, state: Any) -> None:
        token = self._select(seq, state)
        seq.feed(token)
        if seq.done:
            self._release(seq)
            return
        if seq.pos >= self.n_ctx:  # the window is full: the single-sequence loop stops here too
            seq.feed(None)
            seq.feed_end()
            self._release(seq)
            return
        seq.sampler.accept(token)
        seq.last = token

    def _release(self, seq: Sequence) -> None:
        seq.sampler.close()
        self._slots[seq.slot] = None

    def step(self) -> None:
        """One decode with the next token of every running sequence; then refill free slots."""
        running = [s for s in self._slots if s is not None]
        if running:
            self._last = None  # a decode overwrites what the last prefill left (llama.cpp's logits)
            states = self._decode(running)
            for s, state in zip(running, states):
                s.pos += 1
                self._pick(s, state)
        if self.free():
            self.admit()
        if not running and not any(self._slots):
            raise BackendError("the parallel decoder has nothing to run")  # a consumer waits on nothing

    def close(self) -> None:
        for s in self._slots:
            if s is not None:
                s.sampler.close()
        self._slots = [None] * self.n
        self._close()
