"""Perplexity of a text under a model: sliding windows over ``Backend.logprobs``.

Pure over the Backend interface, so both backends are scored by the same code — which makes
this the cross-check of the two backends as well as a user feature.

Windows (as in the Hugging Face perplexity guide): window *i* covers tokens
``[i*stride, i*stride + ctx)``; it scores only the tokens no earlier window scored, each
with all the window's tokens before it as context. So every token but the first is scored
exactly once, with at least ``ctx - stride`` tokens of context once the text is longer
than a window. ``stride == ctx`` gives windows that overlap by one token (fastest, least context).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from llmcli.errors import UsageError


@dataclass(frozen=True)
class Window:
    begin: int  # first token of the window (context only for later windows)
    end: int  # one past the last token
    first_scored: int  # first position whose log-prob counts


def plan_windows(n_tokens: int, ctx: int, stride: int) -> list[Window]:
    if ctx < 2:
        raise UsageError(f"invalid --ctx {ctx}: a perplexity window needs at least 2 tokens")
    if not 1 <= stride <= ctx:
        raise UsageError(f"invalid --stride {stride}: must be between 1 and the window size ({ctx})")
    if n_tokens < 2:
        raise UsageError("the text is too short: perplexity needs at least 2 tokens")
    out: list[Window] = []
    prev_end = 1  # position 0 has no context: it is never scored
    begin = 0
    while prev_end < n_tokens:
        end = min(begin + ctx, n_tokens)
        first = max(prev_end, begin + 1)
        if first < end:
            out.append(Window(begin, end, first))
        prev_end = max(prev_end, end)
        # the next window starts at least one token before the first unscored one, so that token
        # has context (with stride == ctx, consecutive windows overlap by exactly that token)
        begin = min(begin + stride, prev_end - 1)
    return out


@dataclass
class PerplexityResult:
    tokens: int  # scored tokens (text tokens - 1)
    text_tokens: int
    nll_sum: float
    evaluated_tokens: int  # tokens run through the model (windows overlap)
    seconds: float
    ctx: int
    stride: int
    windows: int

    @property
    def mean_nll(self) -> float:
        return self.nll_sum / self.tokens if self.tokens else float("nan")

    @property
    def perplexity(self) -> float:
        return math.exp(self.mean_nll) if self.tokens else float("nan")

    @property
    def tokens_per_second(self) -> float:
        """Model throughput: evaluated tokens per second of scoring."""
        return self.evaluated_tokens / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {
            "perplexity": self.perplexity,
            "mean_nll": self.mean_nll,
            "tokens": self.tokens,
            "text_tokens": self.text_tokens,
            "evaluated_tokens": self.evaluated_tokens,
            "windows": self.windows,
            "ctx": self.ctx,
            "stride": self.stride,
            "seconds": round(self.seconds, 6),
            "tokens_per_s": round(self.tokens_per_second, 3),
        }


def score(backend, ids: Sequence[int], *, ctx: int, stride: int,
          progress: Callable[[int, int], None] | None = None,
          clock: Callable[[], float] = time.perf_counter) -> PerplexityResult:
    """Score ``ids`` with ``backend.logprobs`` over sliding windows."""
    ids = list(ids)
    plan = plan_windows(len(ids), ctx, stride)
    nll = 0.0
    scored = 0
    evaluated = 0
    start = clock()
    for i, w in enumerate(plan):
        lps = backend.logprobs(ids[w.begin:w.end])  # lps[k] = log p(ids[begin+k+1] | ids[begin..begin+k])
        take = lps[w.first_scored - w.begin - 1:]
        if len(take) != w.end - w.first_scored:
            raise RuntimeError(f"backend returned {len(lps)} log-probs for a window of {w.end - w.begin} tokens")
        nll -= math.fsum(take)
        scored += len(take)
        evaluated += w.end - w.begin
        if progress is not None:
            progress(i + 1, len(plan))
    return PerplexityResult(scored, len(ids), nll, evaluated, clock() - start, ctx, stride, len(plan))
