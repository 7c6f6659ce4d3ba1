"""A KV cache layer for transformers' DynamicCache that grows in place (the torch backend's
default cache): appending a token copies one row, truncating for prefix reuse is free."""

from __future__ import annotations

import inspect
from functools import lru_cache


def cache_kwarg(model) -> str:
    """The name the model's ``forward`` takes its KV cache by: ``cache`` since transformers 5.x
    renamed it (the old ``past_key_values`` still works there but warns on every call); remote-code
    models written for older versions still take ``past_key_values``."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return "cache"
    return "cache" if "cache" in params or "past_key_values" not in params else "past_key_values"


@lru_cache(maxsize=1)
def growing_layer_class():
    import torch
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        """DynamicLayer semantics, but keys/values live in a pre-allocated buffer that doubles
        when full, so appending a token is a copy of one row instead of a ``torch.cat`` of
        the whole cache; truncating (prefix reuse) is free."""

        MIN_CAPACITY = 256

        def lazy_initialization(self, key_states, value_states) -> None:
            super().lazy_initialization(key_states, value_states)
            self.length = 0
            self._k = self._v = None

        def _grow(self, need: int, key_states, value_states) -> None:
            cap = max(need, self.MIN_CAPACITY, 2 * (self._k.shape[-2] if self._k is not None else 0))
            b, h = key_states.shape[:2]
            k = torch.empty((b, h, cap, key_states.shape[-1]), dtype=key_states.dtype, device=key_states.device)
            v = torch.empty((b, value_states.shape[1], cap, value_states.shape[-1]), dtype=value_states.dtype,
                            device=value_states.device)
            if self._k is not None and self.length:
                k[:, :, : self.length].copy_(self._k[:, :, : self.length])
                v[:, :, : self.length].copy_(self._v[:, :, : self.length])
            self._k, self._v = k, v

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            n = key_states.shape[-2]
            need = self.length + n
            if self._k is None or need > self._k.shape[-2]:
                self._grow(need, key_states, value_states)
            self._k[:, :, self.length:need].copy_(key_states)
            self._v[:, :, self.length:need].copy_(value_states)
            self.length = need
            self.keys = self._k[:, :, :need]
            self.values = self._v[:, :, :need]
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self.length if self.is_initialized else 0

        def truncate(self, length: int) -> None:
            if self.is_initialized and length < self.length:
                self.length = length
                self.keys = self._k[:, :, :length]
                self.values = self._v[:, :, :length]

        def crop(self, tokens_to_remove: int) -> None:
            if tokens_to_remove < 0:
                self.truncate(max(0, self.length + tokens_to_remove))

        def reset(self) -> None:
            self.length = 0
            self._k = self._v = None
            self.keys = self.values = None
            self.is_initialized = False

    return GrowingLayer
