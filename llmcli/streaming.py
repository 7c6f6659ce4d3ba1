"""Consume a backend stream: route answer and thinking text to their sinks as it
arrives, and turn Ctrl-C into a partial result. Shared by ``generate`` and ``chat``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from llmcli.backends.base import Finish, GenerationStats, prompt_ids as ids_of
from llmcli.errors import StreamError, UsageError
from llmcli.thinking import ThinkFilter


@dataclass
class Reply:
    text: str  # the answer, thinking removed, stop string removed
    thinking: str
    raw_text: str  # everything generated (thinking included)
    token_ids: list[int] = field(default_factory=list)
    stats: GenerationStats = field(default_factory=GenerationStats)
    thinking_tokens: int = 0  # generated inside a thinking block
    error: StreamError | None = None  # the stream broke mid-reply (finish_reason "error"); text is partial

    @property
    def interrupted(self) -> bool:
        return self.stats.finish_reason == "interrupted"


def think_filter_for(prompt_text: str | None) -> ThinkFilter:
    """Templates of some reasoning models open the thinking block in the prompt itself."""
    starts = bool(prompt_text) and prompt_text.rstrip().endswith("<think>")
    return ThinkFilter(start_thinking=starts)


def run_stream(backend, prompt_ids, params, sink, think: ThinkFilter) -> Reply:
    """Stream a reply into SINK. With ``params.reasoning_budget`` N, once N tokens were generated
    inside a thinking block llmcli ends the block itself, as llama.cpp's --reasoning-budget does:
    the closing tag (and a blank line) joins the sequence and generation resumes from there, so the
    model answers. This sits above the backends, so both get it."""
    answer: list[str] = []
    thinking: list[str] = []
    raw: list[str] = []
    ids: list[int] = []
    budget = params.reasoning_budget
    if budget is not None and not backend.capabilities.token_ids:
        # Closing the block means appending ids and resuming; a text-only stream cannot do that.
        raise UsageError(f"--reasoning-budget needs a backend that generates token ids, not {backend.name}",
                         "drop --reasoning-budget")
    thinking_tokens = 0
    generated = 0
    resumed_at = 0  # len(raw) and len(ids) when generation resumed after a forced close
    resumed_ids = 0

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
    events = backend.stream(prompt_ids, params)
    try:
        while final is None:
            ev = next(events, None)
            if ev is None or isinstance(ev, Finish):
                final = ev
                break
            if first_at is None:
                first_at = time.perf_counter()
            in_thinking = think.thinking
            if budget is not None and in_thinking and thinking_tokens >= budget and ev.token_id >= 0:
                # This token would exceed the budget (also right for a budget of 0): drop it, close the block.
                events.close()
                closing = think.close + "\n\n"  # what llama.cpp injects; the blank line is not shown
                ids.extend(backend.tokenize(closing, add_special=False, parse_special=True))
                raw.append(closing)
                emit(think.feed(think.close))
                left = None if params.max_tokens is None else params.max_tokens - len(ids)
                if left is not None and left <= 0:
                    final = Finish("".join(raw), list(ids), GenerationStats(
                        prompt_tokens=len(ids_of(prompt_ids)), generated_tokens=len(ids), finish_reason="length",
                        seed=params.seed))
                    break
                budget = None
                resumed_at, resumed_ids = len(raw), len(ids)
                events = backend.stream(ids_of(prompt_ids) + ids, params.replace(max_tokens=left))
                continue
            if ev.token_id >= 0:
                ids.append(ev.token_id)
            generated += ev.tokens
            thinking_tokens += ev.tokens if in_thinking else 0
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
        return Reply("".join(answer), "".join(thinking), "".join(raw), ids, stats, thinking_tokens, error)
    assert final is not None
    if not resumed_ids:
        return Reply("".join(answer), "".join(thinking), final.text, final.token_ids, final.stats, thinking_tokens)
    # The reply is both passes: the first, the closing tag, and what the second stream generated.
    stats = final.stats
    stats.prompt_tokens = len(ids_of(prompt_ids))
    stats.generated_tokens += resumed_ids
    stats.time_to_first_token = (first_at or started) - started
    stats.generation_seconds = time.perf_counter() - (first_at or started)
    return Reply("".join(answer), "".join(thinking), "".join(raw[:resumed_at]) + final.text,
                 ids[:resumed_ids] + final.token_ids, stats, thinking_tokens)
