"""Several sequences decoded together on the torch backend (``generate --each-line --parallel N``).

The cache is *ragged inside a padded buffer*: per layer one key and one value tensor
[slots, kv_heads, capacity, head_dim]; slot ``b`` holds its own sequence from position 0 to its
length, at its true positions, and its next token is written at its own position (an indexed
copy per layer). One decode step runs the lean Llama step (``torch_lean.layers_forward``) on
[rows, hidden]: every weight is read once for all rows, which is where a CPU's decode time goes.
Attention reads the buffer up to the longest row, with a mask hiding each row's positions past
its own length (the tail of a shorter row).

Why not left padding (transformers' usual batched ``generate``): continuous batching admits
prompts of any length while others are half-way through; a left-padded cache would have to be
shifted to align the newcomer (or padded to the longest row, and every row's positions
offset). Here a newcomer's prompt is evaluated alone through the backend's own single-sequence
path (``LocalBackend._load_prompt``: the same prefix reuse, the same prompt batches, the same
first-token logits as ``stream``) and its keys/values are copied into its slot; nothing else
moves. Each sequence keeps its own sampler (``TokenPicker``: seed, penalties, grammar mask).

Only the batched matmuls and the masked attention differ from a single-sequence run: rounding
can differ in the last bits, measured in docs/performance.md (token agreement over a corpus).
"""

from __future__ import annotations

from llmcli.backends.base import SamplingParams
from llmcli.backends.sequences import Sequence, SequenceDecoder

MIN_CAPACITY = 256  # positions per slot allocated at first; doubled when a row outgrows it


class RaggedCache:
    """Keys/values of ``slots`` sequences of different lengths, grown in place."""

    def __init__(self, torch, layers: int, slots: int, heads: int, head_dim: int, dtype, device):
        self._torch = torch
        self._shape = (slots, heads, 0, head_dim)
        self._dtype, self._device = dtype, device
        self.keys = [self._empty(0) for _ in range(layers)]
        self.values = [self._empty(0) for _ in range(layers)]

    def _empty(self, capacity: int):
        s = self._shape
        return self._torch.zeros((s[0], s[1], capacity, s[3]), dtype=self._dtype, device=self._device)

    def reserve(self, length: int) -> None:
        """Room for ``length`` positions in every slot (the buffers double, keeping what they hold)."""
        cap = self.keys[0].shape[2]
        if length <= cap:
            return
        new = max(length, MIN_CAPACITY, 2 * cap)
        for buffers in (self.keys, self.values):
            for i, old in enumerate(buffers):
                grown = self._empty(new)
                grown[:, :, :cap].copy_(old)
                buffers[i] = grown

    def put(self, slot: int, layer_keys, layer_values) -> None:
        """A prompt's keys/values ([1, heads, length, head_dim] per layer) into ``slot`` from position 0."""
        length = layer_keys[0].shape[2]
        self.reserve(length)
        for dst, src in ((self.keys, layer_keys), (self.values, layer_values)):
            for buf, part in zip(dst, src):
                buf[slot, :, :length].copy_(part[0])


class TorchParallelDecoder(SequenceDecoder):
    """Up to ``n`` sequences on a TorchBackend whose model has the lean Llama step."""

    def __init__(self, backend, n: int):
        super().__init__(backend, n, backend.n_ctx)
        import torch

        self._torch = torch
        lean = backend._lean
        self._lean = lean
        self._cache = RaggedCache(torch, len(lean.layers), n, lean.n_kv, lean.head_dim, lean.dtype, lean.device)
        self._gqa = lean.n_kv != lean.n_q

    def _prefill(self, ids: list[int]):
        """The backend's own prompt evaluation (prefix reuse included), then a copy into a free slot."""
        backend = self.backend
        slot = self._slots.index(None)
        evaluated, logits = backend._load_prompt(ids)
        layers = backend._cache.layers
        self._cache.put(slot, [layer.keys for layer in layers], [layer.values for layer in layers])
        return slot, evaluated, logits

    def _new_sampler(self, params: SamplingParams, seed: int, ids: list[int]):
        return self.backend._sampler(params, seed, ids)

    def _select(self, seq: Sequence, logits) -> int:
        return seq.sampler.pick(logits)

    def _decode(self, running: list[Sequence]) -> list:
        """One forward over slots 0 … the highest running one (a free slot in between decodes a dummy
        token at position 0 of its own row, which nothing reads)."""
        torch, F, lean, cache = self._torch, self._lean._F, self._lean, self._cache
        rows = running[-1].slot + 1
        tokens, positions = [0] * rows, [0] * rows
        for s in running:
            tokens[s.slot], positions[s.slot] = s.last, s.pos
        length = max(positions) + 1
        cache.reserve(length)
        device = lean.device
        with torch.inference_mode():
            pos = torch.tensor(positions, dtype=torch.long, device=device)
            index = torch.arange(rows, device=device)
            mask = (torch.arange(length, device=device) <= pos[:, None]).view(rows, 1, 1, length)
            cos, sin = lean.rope(pos)
            cos, sin = cos.view(rows, 1, 1, -1), sin.view(rows, 1, 1, -1)
            gqa = self._gqa

            def attend(i, q, k, v, scale):
                keys, values = cache.keys[i], cache.values[i]
                keys[index, :, pos] = k[:, :, 0]
                values[index, :, pos] = v[:, :, 0]
                return F.scaled_dot_product_attention(q, keys[:rows, :, :length], values[:rows, :, :length],
                                                      attn_mask=mask, scale=scale, enable_gqa=gqa)

            x = lean.layers_forward(lean.embed[torch.tensor(tokens, device=device)], cos, sin, attend)
            logits = F.linear(lean._rms_norm(x, *lean.norm), lean.head)
        return [logits[s.slot] for s in running]

    def _share(self, src: int, dst: int, length: int) -> None:
        for buffers in (self._cache.keys, self._cache.values):
            for buf in buffers:
                buf[dst, :, :length].copy_(buf[src, :, :length])

    def _close(self) -> None:
        self._cache = None
