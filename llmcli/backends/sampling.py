"""Sampling pieces that both backends share and neither library offers natively."""

from __future__ import annotations

from collections.abc import Iterable

# llama.cpp's default repeat-penalty window (penalty_last_n), used by both local backends.
PENALTY_LAST_N = 64


class NgramBlocker:
    """``no_repeat_ngram_size``: forbid any token that would complete an n-gram
    already present in the sequence (prompt included, as transformers does).

    Incremental: each new token costs O(1), so the per-token price stays flat."""

    def __init__(self, n: int, ids: Iterable[int] = ()):
        self.n = n
        self.ids: list[int] = []
        self.seen: dict[tuple[int, ...], set[int]] = {}
        for t in ids:
            self.append(t)

    def append(self, token: int) -> None:
        self.ids.append(token)
        if self.n >= 1 and len(self.ids) >= self.n:
            gram = tuple(self.ids[-self.n:])
            self.seen.setdefault(gram[:-1], set()).add(gram[-1])

    def banned(self) -> set[int]:
        if self.n < 1 or len(self.ids) < self.n - 1:
            return set()
        prefix = tuple(self.ids[len(self.ids) - self.n + 1:]) if self.n > 1 else ()
        return self.seen.get(prefix, set())
