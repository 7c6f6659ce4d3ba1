"""Several sequences decoded together on llama.cpp, as its ``parallel`` example does: one context
with ``n_seq_max`` sequences (each its own KV stream of the full window: ``kv_unified`` off), one
``llama_batch`` per step holding the next token of every running sequence, each sampled at its
own batch index by its own sampler chain. The slots, admission and per-sequence semantics are
``sequences.SequenceDecoder``'s; this module holds only llama.cpp's native steps.

Keys/values are shared between slots with ``llama_memory_seq_cp``. With ``kv_unified`` off each
sequence is its own stream, so llama.cpp copies the whole stream buffer (``seq_cp`` across
streams, done in the next ``llama_decode``). A unified cache would only relabel cells, but then
every decode row of a step attends in one stream: a different flash-attention path than a
single-sequence decode (``ggml_compute_forward_flash_attn_ext`` takes its tiled kernel once a
stream holds 64 query rows, and the split-KV one only for a single row), and replies would no
longer equal single-sequence ones bit for bit. Two kinds of sharing:

- the prompt submitted just before (``generate --n``; the samples of one ``--each-line`` line):
  ``SequenceDecoder.submit`` copies it whole and reuses its logits;
- any other prompt takes from a slot the longest prefix the single-sequence cache would reuse
  (``LlamaCppBackend.shareable``: whole ALIGN units on CPU, so the keys/values are bit for bit
  those of a fresh evaluation): a long shared instruction is evaluated once, not once per line.
"""

from __future__ import annotations

from llmcli.backends.base import SamplingParams
from llmcli.backends.sequences import Sequence, SequenceDecoder
from llmcli.errors import BackendError


class ParallelDecoder(SequenceDecoder):
    """Up to ``n`` sequences on ``backend`` (a LlamaCppBackend) decoded together."""

    def __init__(self, backend, n: int):
        super().__init__(backend, n, backend.n_ctx)
        ll = backend._ll
        internals = backend._internals
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
        self._batch = internals.LlamaBatch(n_tokens=max(backend.n_batch, n), embd=0, n_seq_max=1, verbose=False)
        self._held: list[tuple[int, ...]] = [()] * n  # per slot: the prompt ids whose keys/values it holds

    def _prefill(self, ids: list[int]) -> tuple[int, int, int]:
        """The prompt into a free slot: the longest prefix a slot holds (a free one in place, a running
        one copied), then the rest in aligned batches from there."""
        free = [s for s, q in enumerate(self._slots) if q is None]
        keep, _, src = max(((self.backend.shareable(held, ids), s in free, s)
                            for s, held in enumerate(self._held) if held), default=(0, False, -1))
        slot = src if keep and src in free else free[0]
        if keep and src != slot:
            self._share(src, slot, keep)
        else:
            self._ll.llama_memory_seq_rm(self._ctx.memory, slot, keep, -1)
        self._held[slot] = ()  # until the prompt is in (a failed decode leaves the slot in between)
        size = 0
        for start, size in self.backend._chunks(len(ids) - keep, at=keep):
            start += keep
            self._decode_rows([(t, start + i, slot) for i, t in enumerate(ids[start:start + size])])
        self._held[slot] = tuple(ids)
        return slot, len(ids) - keep, size - 1

    def _share(self, src: int, dst: int, length: int) -> None:
        # With kv_unified off each sequence is its own stream: llama.cpp copies the whole stream
        # (done in the next llama_decode), so what dst held goes first.
        memory = self._ctx.memory
        self._ll.llama_memory_seq_rm(memory, dst, 0, -1)
        self._ll.llama_memory_seq_cp(memory, src, dst, -1, -1)
        self._ll.llama_memory_seq_rm(memory, dst, length, -1)
        self._held[dst] = self._held[src][:length]

    def _new_sampler(self, params: SamplingParams, seed: int, ids: list[int]):
        return self.backend._sampler(params, seed, ids, ctx=self._ctx.ctx)

    def _select(self, seq: Sequence, index: int) -> int:
        seq.sampler.idx = index  # the logits live in the context, at this row of the last batch
        return seq.sampler.pick(None)

    def _decode(self, running: list[Sequence]) -> list[int]:
        self._decode_rows([(s.last, s.pos, s.slot) for s in running])
        return list(range(len(running)))

    def _decode_rows(self, rows: list[tuple[int, int, int]]) -> None:
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

    def _close(self) -> None:
        self._held = [()] * self.n
        for o in (self._batch, self._ctx):
            o.close()
