"""Several sequences decoded together on llama.cpp, as its ``parallel`` example does: one context
with ``n_seq_max`` sequences (each its own KV stream of the full window: ``kv_unified`` off), one
``llama_batch`` per step holding the next token of every running sequence, each sampled at its
own batch index by its own sampler chain. A sequence that finishes frees its slot at once and
``admit`` (the caller's callback) starts the next one: continuous batching.

A prompt submitted again right after it was evaluated (``generate --n``: the same prompt for every
sample; ``--each-line --n K``: the K samples of a line) is not evaluated again: its keys/values are
copied from the slot that holds them (``llama_memory_seq_cp``) and its first token is sampled from
the same logits. Any other prompt takes from a slot the longest prefix the single-sequence cache
would reuse (whole ALIGN units on CPU, so the keys/values are bit for bit those of a fresh
evaluation): a long shared instruction is evaluated once per decoder, not once per line. With ``kv_unified`` off each sequence is its own stream, so llama.cpp copies the
whole stream buffer (``seq_cp`` across streams, done in the next ``llama_decode``); a unified cache
would only relabel cells, but then every decode row of a step attends in one stream, a different
flash-attention path than a single-sequence decode (``ggml_compute_forward_flash_attn_ext``: the
tiled kernel once a stream holds several query rows), and replies would no longer equal
single-sequence ones bit for bit.

Each sequence keeps the single-sequence semantics: its ids go through ``textstream.drive``
(UTF-8, stop strings, max tokens, stats) exactly as ``LocalBackend.stream`` does; the consumer
reads its events with ``Sequence.events()``, which decodes more steps (for every sequence) when
this one has none buffered, so results can be consumed in submission order.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from llmcli.backends.base import Finish, SamplingParams, StreamEvent, TokenEvent, prompt_ids
from llmcli.backends.core import open_stream
from llmcli.backends.textstream import drive
from llmcli.errors import BackendError


class Sequence:
    """One submitted prompt: its slot, sampler, and the events ``drive`` produced so far."""

    def __init__(self, decoder: ParallelDecoder, slot: int, sampler, params: SamplingParams, stats, n_prompt: int,
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
    """``drive``'s clock, whose first reading is ``started``: the time to first token then counts the
    prompt's evaluation, as in a single-sequence stream."""
    first = [started]
    return lambda: first.pop() if first else time.perf_counter()


@dataclass(frozen=True)
class _Evaluated:
    """The prompt evaluated last: ``slot`` holds its keys/values, row ``row`` of the last batch its
    logits (valid until the next ``llama_decode``)."""

    ids: tuple[int, ...]
    slot: int
    row: int


class ParallelDecoder:
    """Up to ``n`` sequences on ``backend`` (a LlamaCppBackend) decoded together."""

    def __init__(self, backend, n: int):
        ll = backend._ll
        internals = backend._internals
        self.backend = backend
        self.n = n
        self._ll = ll
        cparams = backend._cparams
        saved = (cparams.n_ctx, cparams.n_seq_max, cparams.kv_unified)
        cparams.n_ctx, cparams.n_seq_max, cparams.kv_unified = backend.n_ctx * n, n, False
        try:
            self._ctx = internals.LlamaContext(model=backend._model, params=cparams, verbose=False)
        except ValueError:
            raise BackendError(f"llama.cpp could not create a context for {n} sequences of {backend.n_ctx} tokens",
                               "use a smaller --parallel or --ctx") from None
        finally:
            cparams.n_ctx, cparams.n_seq_max, cparams.kv_unified = saved
        self.n_ctx = backend.n_ctx
        self._batch = internals.LlamaBatch(n_tokens=max(backend.n_batch, n), embd=0, n_seq_max=1, verbose=False)
        self._slots: list[Sequence | None] = [None] * n
        self._evaluated: _Evaluated | None = None
        self._held: list[tuple[int, ...]] = [()] * n  # per slot: the prompt whose keys/values it holds
        self.admit: Callable[[], None] = lambda: None

    def free(self) -> int:
        return sum(s is None for s in self._slots)

    def submit(self, prompt, params: SamplingParams) -> Sequence:
        """Evaluate ``prompt`` into a free slot and sample its first token. What another slot already
        holds is not evaluated again (``_share``); the stats count only the ids evaluated here."""
        started = time.perf_counter()
        backend = self.backend
        ids = prompt_ids(prompt)
        stats = open_stream(backend, ids, params, n_ctx_train=backend.n_ctx_train)
        backend._check_ids(ids)
        key = tuple(ids)
        slot, keep, row = self._share(key)
        if keep < len(ids):
            size = 0
            for start, size in backend._chunks(len(ids) - keep, at=keep):
                start += keep
                self._decode([(t, start + i, slot) for i, t in enumerate(ids[start:start + size])])
            row = size - 1
            self._evaluated = _Evaluated(key, slot, row)
        stats.prompt_tokens_processed = len(ids) - keep
        self._held[slot] = key
        sampler = backend._sampler(params, stats.seed, ids, ctx=self._ctx.ctx)
        seq = Sequence(self, slot, sampler, params, stats, len(ids), started)
        self._slots[slot] = seq
        self._pick(seq, row)
        return seq

    def _share(self, ids: tuple[int, ...]) -> tuple[int, int, int]:
        """(free slot for ``ids``, how many leading ids it now holds, logits row when that is all).

        The prompt evaluated just before (no decode since) is shared whole, logits included. Otherwise
        the longest prefix some slot's prompt shares with ``ids``, as far as the single-sequence cache
        would reuse it (``shareable``: aligned units on CPU, so the keys/values are the ones a fresh
        evaluation computes). A free slot holding it is used in place; a running one is copied.
        Copies are of whole streams (llama.cpp's cross-stream ``seq_cp``, done in the next decode);
        they replace what the slot held, and the part past the prefix is then dropped."""
        memory, ll = self._ctx.memory, self._ll
        free = [s for s, q in enumerate(self._slots) if q is None]
        done = self._evaluated
        if done is not None and done.ids == ids:
            keep, src, row = len(ids), done.slot, done.row
        else:
            keep, _, src = max(((self.backend.shareable(held, ids), s in free, s)
                                for s, held in enumerate(self._held) if held), default=(0, False, -1))
            row = -1
            if keep == 0:
                src = -1
        slot = src if src in free else free[0]
        self._held[slot] = ()  # until the prompt is in (a failed decode leaves the slot in between)
        if src >= 0 and src != slot:
            ll.llama_memory_seq_cp(memory, src, slot, -1, -1)
        ll.llama_memory_seq_rm(memory, slot, keep, -1)
        return slot, keep, row

    def _decode(self, rows: list[tuple[int, int, int]]) -> None:
        self._evaluated = None  # the logits it pointed at are overwritten
        b = self._batch.batch
        b.n_tokens = len(rows)
        for j, (token, pos, slot) in enumerate(rows):
            b.token[j], b.pos[j], b.seq_id[j][0], b.n_seq_id[j], b.logits[j] = token, pos, slot, 1, False
        if len({slot for _, _, slot in rows}) == 1:
            b.logits[len(rows) - 1] = True
        else:
            for j in range(len(rows)):
                b.logits[j] = True
        rc = self._ll.llama_decode(self._ctx.ctx, b)
        if rc != 0:
            raise BackendError(f"llama.cpp failed to evaluate the tokens (llama_decode returned {rc})")

    def _pick(self, seq: Sequence, index: int) -> None:
        seq.sampler.idx = index
        token = seq.sampler.pick(None)
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
        # The slot's keys/values stay until ``submit`` reuses it: a sample that ends at its first
        # token may still be the source the next sample of the same prompt copies.
        seq.sampler.close()
        self._slots[seq.slot] = None

    def step(self) -> None:
        """One decode with the next token of every running sequence; then refill free slots."""
        running = [s for s in self._slots if s is not None]
        if running:
            self._decode([(s.last, s.pos, s.slot) for s in running])
            for j, s in enumerate(running):
                s.pos += 1
                self._pick(s, j)
        if self.free():
            self.admit()
        if not running and not any(self._slots):
            raise BackendError("the parallel decoder has nothing to run")  # a consumer waits on nothing

    def close(self) -> None:
        for s in self._slots:
            if s is not None:
                s.sampler.close()
        self._slots = [None] * self.n
        self._held = [()] * self.n
        for o in (self._batch, self._ctx):
            o.close()
