"""Grammar-constrained sampling on llama.cpp's native samplers, the way llama.cpp's own
``common_sampler`` does it.

The grammar sampler is exact but slow over a whole vocabulary (it walks the grammar for each
of ~50k candidates; measured ≈1 token/s on SmolLM2 with a JSON schema). Most tokens a model
picks are already allowed, so: sample with the plain chain, ask the grammar about that one
token, and only when it is rejected apply the grammar to every candidate and sample again.
The result is a draw from the constrained distribution either way: when the token is allowed
it is one the constrained chain could have drawn with the same relative weights."""

from __future__ import annotations

import ctypes
import math


class GrammarSampler:
    """The ``Sampler`` (core.py) for one constrained stream: ``chain`` (penalties, bans, top-k …
    dist/greedy; owned) plus a grammar sampler (owned)."""

    def __init__(self, ll, chain, grammar, ctx, n_vocab: int, blocker):
        import numpy as np

        self._ll, self._chain, self._grammar, self._ctx = ll, chain, grammar, ctx
        self._blocker = blocker
        self._n = n_vocab
        self._buf = (ll.llama_token_data * n_vocab)()
        self._view = np.ctypeslib.as_array(self._buf)
        self._ids = np.arange(n_vocab, dtype=np.int32)
        self._np = np
        self.idx = -1  # which row of the last batch holds this sequence's logits (--parallel)
        self._one = ll.llama_token_data()
        self._one_arr = ll.llama_token_data_array(data=ctypes.pointer(self._one), size=1, selected=-1,
                                                  sorted=False)

    def _candidates(self):
        np = self._np
        logits = np.ctypeslib.as_array(self._ll.llama_get_logits_ith(self._ctx, self.idx), shape=(self._n,))
        v = self._view
        v["id"] = self._ids  # the chain reorders the array in place: start from vocabulary order
        v["logit"] = logits
        v["p"] = 0.0
        return self._ll.llama_token_data_array(data=self._buf, size=self._n, selected=-1, sorted=False)

    def _allowed(self, token: int) -> bool:
        one = self._one
        one.id, one.logit, one.p = token, 0.0, 0.0
        self._one_arr.size, self._one_arr.selected, self._one_arr.sorted = 1, -1, False
        self._ll.llama_sampler_apply(self._grammar, ctypes.byref(self._one_arr))
        return one.logit != -math.inf

    def pick(self, _state) -> int:
        ll = self._ll
        arr = self._candidates()
        ll.llama_sampler_apply(self._chain.sampler, ctypes.byref(arr))
        token = int(self._buf[arr.selected].id)
        if not self._allowed(token):
            arr = self._candidates()
            ll.llama_sampler_apply(self._grammar, ctypes.byref(arr))  # vocabulary order kept: bans still work
            ll.llama_sampler_apply(self._chain.sampler, ctypes.byref(arr))
            token = int(self._buf[arr.selected].id)
        ll.llama_sampler_accept(self._grammar, token)
        ll.llama_sampler_accept(self._chain.sampler, token)
        return token

    def accept(self, token: int) -> None:
        if self._blocker is not None:
            self._blocker.append(token)

    def close(self) -> None:
        self._chain.close()
        if self._grammar is not None:
            self._ll.llama_sampler_free(self._grammar)
            self._grammar = None
