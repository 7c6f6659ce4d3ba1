"""Consume a backend stream: route answer and thinking text to their sinks as it
arrives, and turn Ctrl-C into a partial result. Shared by ``generate`` and ``chat``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from llmcli.backends.base import Finish, GenerationStats, prompt_ids as ids_of
from llmcli.errors import StreamError
from llmcli.thinking import ThinkFilter


@dataclass
class Reply:
    text: str  # the answer, thinking removed, stop string removed
    thinking: str
    raw_text: str  # everything generated (thinking included)
    token_ids: list[int] = field(default_factory=list)
    stats: GenerationStats = field(default_factory=GenerationStats)
    error: StreamError | None = None  # the stream broke mid-reply (finish_reason "error"); text is partial

    @property
    def interrupted(self) -> bool:
        return self.stats.finish_reason == "interrupted"


def think_filter_for(prompt_text: str | None) -> ThinkFilter:
    """Templates of some reasoning models open the thinking block in the prompt itself."""
    starts = bool(prompt_text) and prompt_text.rstrip().endswith("<think>")
    return ThinkFilter(start_thinking=starts)


def run_stream(backend, prompt_ids, params, sink, think: ThinkFilter) -> Reply:
    answer: list[str] = []
    thinking: list[str] = []
    raw: list[str] = []
    ids: list[int] = []
    generated = 0

    def emit(pieces):
        for is_thinking, text in pieces:
            if is_thinking:
                thinking.append(text)
                sink.thinking(text)
            else:
                answer.append(text)
                sink.answer(text)

    final: Finish | None = None
    started = time.perf_counter()
    first_at: float | None = None
    try:
        for ev in backend.stream(prompt_ids, params):
            if isinstance(ev, Finish):
                final = ev
                break
            if first_at is None:
                first_at = time.perf_counter()
            if ev.token_id >= 0:
                ids.append(ev.token_id)
            generated += ev.tokens
            raw.append(ev.text)
            emit(think.feed(ev.text))
        emit(think.flush())
    except (KeyboardInterrupt, StreamError) as e:
        emit(think.flush())
        error = e if isinstance(e, StreamError) else None
        stats = GenerationStats(prompt_tokens=len(ids_of(prompt_ids)), generated_tokens=generated,
                                finish_reason="error" if error else "interrupted", seed=params.seed)
        if first_at is not None:  # the backend's own timings are lost with the stream: use ours
            stats.time_to_first_token = first_at - started
            stats.generation_seconds = time.perf_counter() - first_at
        return Reply("".join(answer), "".join(thinking), "".join(raw), ids, stats, error)
    assert final is not None
    return Reply("".join(answer), "".join(thinking), final.text, final.token_ids, final.stats)
