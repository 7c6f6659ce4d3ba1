"""Backend-independent stream semantics: incremental UTF-8 decoding, stop strings,
max-tokens and timing. Local backends hand this module a plain iterator of token ids, a
server backend an iterator of text chunks; everything a user sees about a stream is
decided here, once."""

from __future__ import annotations

import codecs
import time
from collections.abc import Callable, Iterable, Iterator, Sequence

from llmcli.backends.base import Finish, GenerationStats, SamplingParams, StreamEvent, TextChunk, TokenEvent


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
    source: Iterable[int] | Iterable[TextChunk],
    *,
    params: SamplingParams,
    stats: GenerationStats,
    piece: Callable[[int], bytes] | None = None,
    is_end: Callable[[int], bool] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Iterator[StreamEvent]:
    """Turn a backend's native output into TokenEvents and a final Finish.

    ``source`` yields either raw sampled ids (a local backend's loop; ``piece`` gives an id's
    bytes and ``is_end`` says whether it ends the text) or ``TextChunk``s (a server's stream),
    and the same rules apply to both: UTF-8 is assembled from bytes, stop strings are cut on
    the text, ``max_tokens`` counts generated tokens, and the timings are taken here.
    Prompt processing happens before the source's first item; ``stats`` arrives with the
    prompt counts filled in (a server backend may update them before its last chunk).
    A KeyboardInterrupt while waiting for the next item ends the stream with finish_reason
    "interrupted" and is then re-raised to the caller's loop.
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    stopper = StopScanner(params.stop)
    ids: list[int] = []
    parts: list[str] = []
    count = 0
    hit_stop = False
    start = clock()
    first_at = None
    stats.finish_reason = "length"
    iterator = iter(source)
    limit = params.max_tokens
    try:
        while limit is None or count < limit:
            try:
                item = next(iterator)
            except StopIteration:
                break  # the backend ran out of context window
            now = clock()
            if first_at is None:
                first_at = now
                stats.time_to_first_token = now - start
            if type(item) is int:  # noqa: E721 - the hot path: one id from a local backend
                if is_end(item):
                    stats.finish_reason = "stop"
                    break
                ids.append(item)
                count += 1
                tid, n = item, 1
                text, hit_stop = stopper.feed(decoder.decode(piece(item)))
            else:
                ids.extend(item.token_ids)
                count += item.tokens
                tid, n = (item.token_ids[-1] if item.token_ids else -1), item.tokens
                text, hit_stop = stopper.feed(item.text) if item.text else ("", False)
            if text:
                parts.append(text)
            if text or n:
                yield TokenEvent(tid, text, n)
            if hit_stop:
                stats.finish_reason = "stop"
                break
            if type(item) is not int and item.finish_reason:  # noqa: E721
                stats.finish_reason = item.finish_reason
                break
    except KeyboardInterrupt:
        stats.finish_reason = "interrupted"
        raise
    finally:
        stats.generated_tokens = count
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
            yield TokenEvent(-1, tail, 0)
    yield Finish("".join(parts), ids, stats)
