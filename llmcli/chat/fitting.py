"""Fit a conversation into the context window: pure functions over a token-count function.

Before a turn the prompt (system prompt + kept exchanges + the new message) plus room for
the reply must fit the window. When it does not, the oldest exchanges are dropped — never
the system prompt, never the new message — until the prompt takes at most half of the
window, so that the next turns again only add new tokens to the cached prefix instead of
re-evaluating a shifted window every turn (llama.cpp's own context shift also halves).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_REPLY_RESERVE = 512


def reply_reserve(max_tokens: int | None, n_ctx: int) -> int:
    """Tokens kept free for the reply: --max-tokens, or 512 when unlimited; at most half the window."""
    return max(1, min(max_tokens if max_tokens else DEFAULT_REPLY_RESERVE, n_ctx // 2))


@dataclass(frozen=True)
class Fit:
    start: int  # index of the first exchange sent to the model
    dropped: int  # exchanges dropped by this call (start - the start it was given)
    tokens: int  # prompt tokens with that start


class Overflow(Exception):
    """Even the system prompt and the new message alone leave no room for the reply."""

    def __init__(self, tokens: int, budget: int):
        super().__init__(tokens, budget)
        self.tokens = tokens  # prompt tokens with every droppable exchange dropped
        self.budget = budget  # n_ctx - reserve


def fit(exchanges: int, start: int, count: Callable[[int], int], *, n_ctx: int, reserve: int) -> Fit:
    """Choose the first exchange to send.

    ``count(s)`` is the prompt's token count when exchanges ``s..exchanges-1`` are sent (plus the
    system prompt and the new message); it must not grow with ``s``. ``start`` is where the
    previous turn started: exchanges before it are never sent again. Raises ``Overflow``.
    """
    budget = n_ctx - reserve
    start = max(0, min(start, exchanges))
    tokens = count(start)
    if tokens <= budget:
        return Fit(start, 0, tokens)
    last = count(exchanges)
    if last > budget:
        raise Overflow(last, budget)
    target = min(budget, n_ctx // 2)
    goal = target if last <= target else budget
    # Smallest s in (start, exchanges] with count(s) <= goal: count is non-increasing, so bisect.
    lo, hi = start + 1, exchanges
    best = exchanges
    cache = {exchanges: last}
    while lo <= hi:
        mid = (lo + hi) // 2
        c = cache.setdefault(mid, count(mid))
        if c <= goal:
            best = mid
            hi = mid - 1
        else:
            lo = mid + 1
    return Fit(best, best - start, cache[best])
