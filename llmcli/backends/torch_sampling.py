"""Token selection for the torch backend, with llama.cpp's meaning for every knob.

The chain is llama.cpp's (and llmcli's on both backends):
repeat penalty (last 64 tokens, prompt included) → no-repeat-ngram → top-k → top-p → min-p
→ temperature → draw; with temperature 0: penalties → no-repeat-ngram → argmax.
As in llama.cpp, top-p and min-p look at the distribution *before* temperature.
Everything stays on the model's device; the only host sync is reading the chosen id.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

from llmcli.backends.base import SamplingParams
from llmcli.backends.sampling import PENALTY_LAST_N, NgramBlocker


def apply_repeat_penalty(logits, ids: Sequence[int], penalty: float) -> None:
    """In place, llama.cpp's rule: a seen token's logit is divided by the penalty when
    positive and multiplied by it otherwise (once per distinct token)."""
    import torch

    if penalty == 1.0 or not ids:
        return
    idx = torch.tensor(sorted(set(ids)), device=logits.device, dtype=torch.long)
    vals = logits.index_select(0, idx)
    logits.index_copy_(0, idx, torch.where(vals > 0, vals / penalty, vals * penalty))


def keep_mask(vals, params: SamplingParams):
    """Which candidates top-p then min-p keep; ``vals`` are logits sorted descending.
    Computed on the device without host syncs; the first candidate is always kept."""
    import torch

    keep = torch.ones_like(vals, dtype=torch.bool)
    if params.top_p < 1.0:
        probs = torch.softmax(vals, dim=0)
        # the smallest prefix whose mass reaches top_p, the crossing token included
        keep &= (probs.cumsum(0) - probs) < params.top_p
    if params.min_p > 0.0:
        keep &= vals >= vals[0] + math.log(params.min_p)
    keep[0] = True
    return keep


class TokenPicker:
    """Chooses the next id from one position's logits; ``accept`` records it."""

    def __init__(self, params: SamplingParams, seed: int, history: Sequence[int], device="cpu", mask=None):
        import torch

        self.params = params
        self.mask = mask  # torch_grammar.TokenMask: structured output
        self.window: deque[int] = deque(history[-PENALTY_LAST_N:], maxlen=PENALTY_LAST_N)
        self.blocker = NgramBlocker(params.no_repeat_ngram_size, history) if params.no_repeat_ngram_size else None
        self.generator = None
        if not params.greedy:
            self.generator = torch.Generator(device=device)
            self.generator.manual_seed(seed)

    def accept(self, token: int) -> None:
        if self.mask is not None:
            self.mask.consume(token)
        self.window.append(token)
        if self.blocker is not None:
            self.blocker.append(token)

    def scores(self, logits):
        """Logits after penalties and bans (a float32 copy; the input is left alone)."""
        import torch

        x = logits.to(torch.float32, copy=True)
        if self.mask is not None:  # first, so every later step sees only what the grammar allows
            x.masked_fill_(~self.mask.allowed(x.device), -math.inf)
        apply_repeat_penalty(x, self.window, self.params.repeat_penalty)
        if self.blocker is not None:
            banned = self.blocker.banned()
            if banned:
                x[torch.tensor(sorted(banned), device=x.device, dtype=torch.long)] = -math.inf
        return x

    def pick(self, logits) -> int:
        import torch

        with torch.inference_mode():
            p = self.params
            x = self.scores(logits)
            if p.greedy:
                return int(torch.argmax(x).item())
            vocab = x.shape[0]
            if 0 < p.top_k < vocab:
                vals, idx = torch.topk(x, p.top_k)
            else:
                vals, idx = torch.sort(x, descending=True)
            vals = vals.masked_fill(~keep_mask(vals, p), -math.inf)
            probs = torch.softmax(vals / p.temperature, dim=0)
            choice = torch.multinomial(probs, 1, generator=self.generator)
            return int(idx[choice].item())

    def close(self) -> None:
        pass
