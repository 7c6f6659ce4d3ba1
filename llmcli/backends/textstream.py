"""Backend-independent token-stream plumbing: incremental UTF-8 decoding, stop
strings, max-tokens and timing. Both backends hand this module a plain iterator of
token ids; everything a user sees about a stream is decided here, once."""

from __future__ import annotations

import codecs
import time
from collections.abc import Callable, Iterable, Iterator, Sequence

from llmcli.backends.base import Finish, GenerationStats, SamplingParams, StreamEvent, TokenEvent


def held_suffix_len(text: str, patterns: Sequence[str]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of a pattern:
    those characters may still become a pattern and must not be released yet."""
    best = 0
    for p in patterns:
        for k in range(min(len(p) - 1, len(text)), best, -1):
            if text.endswith(p[:k]):
                best = k
                break
    return best


class StopScanner:
    """Releases text as soon as it cannot be the start of a stop string; cuts at the
    first stop string. Only a tail window is ever scanned, never the whole output."""

    def __init__(self, stops: Sequence[str]):
        self.stops = [s for s in stops if s]
        self.pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        if not self.stops:
            return text, False
        buf = self.pending + text
        cut = -1
        for s in self.stops:
            i = buf.find(s)
            if i != -1 and (cut == -1 or i < cut):
                cut = i
        if cut != -1:
            self.pending = ""
            return buf[:cut], True
        hold = held_suffix_len(buf, self.stops)
        self.pending = buf[len(buf) - hold:] if hold else ""
        return buf[: len(buf) - hold], False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


def drive(
    raw_ids: Iterable[int],
    *,
    piece: Callable[[int], bytes],
    is_end: Callable[[int], bool],
    params: SamplingParams,
    stats: GenerationStats,
    clock: Callable[[], float] = time.perf_counter,
) -> Iterator[StreamEvent]:
    """Turn raw sampled ids into TokenEvents and a final Finish.

    ``raw_ids`` is the backend's native sampling loop (prompt processing happens
    before its first id). ``stats`` arrives with the prompt counts filled in.
    A KeyboardInterrupt while waiting for the next id ends the stream with
    finish_reason "interrupted" and is then re-raised by the caller's loop.
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    stopper = StopScanner(params.stop)
    ids: list[int] = []
    parts: list[str] = []
    hit_stop = False
    start = clock()
    first_at = None
    stats.finish_reason = "length"
    iterator = iter(raw_ids)
    try:
        while params.max_tokens is None or len(ids) < params.max_tokens:
            try:
                tok = next(iterator)
            except StopIteration:
                break  # the backend ran out of context window
            now = clock()
            if first_at is None:
                first_at = now
                stats.time_to_first_token = now - start
            if is_end(tok):
                stats.finish_reason = "stop"
                break
            ids.append(tok)
            text, hit_stop = stopper.feed(decoder.decode(piece(tok)))
            if text:
                parts.append(text)
            yield TokenEvent(tok, text)
            if hit_stop:
                stats.finish_reason = "stop"
                break
    except KeyboardInterrupt:
        stats.finish_reason = "interrupted"
        raise
    finally:
        stats.generated_tokens = len(ids)
        if first_at is not None:
            stats.generation_seconds = clock() - first_at
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
    if not hit_stop:
        # Release what was held back: an incomplete UTF-8 tail, a partial stop string.
        tail, hit_stop = stopper.feed(decoder.decode(b"", final=True))
        if not hit_stop:
            tail += stopper.flush()
        if tail:
            parts.append(tail)
            yield TokenEvent(-1, tail)
    yield Finish("".join(parts), ids, stats)
