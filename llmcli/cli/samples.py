"""``generate --n N``: where each sample streams from.

On a backend that decodes several sequences together (``capabilities.parallel`` > 1) the N samples
run in one decoder: the prompt is evaluated once, every other sample starts from a copy of its
keys/values and its logits (``decoder.submit`` shares a prompt submitted twice in a row), and the
samples are decoded together. Their stats show it: the first sample has ``prompt_tokens_processed``
equal to the prompt length, the others 0. Elsewhere the samples run one after another.
Sample i uses seed S + i either way, and its text is the one a single run with that seed gives
(docs/performance.md, "Batch decoding", has the measured agreement)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator


def sample_sources(engine, prompt, params_list: list) -> Iterator[tuple[object, object]]:
    """(backend to stream from, its params) for each sample, in order; close the generator when done
    (it owns the decoder)."""
    cap = engine.capabilities.parallel
    if len(params_list) < 2 or cap < 2 or params_list[0].reasoning_budget is not None:
        # --reasoning-budget resumes a stream with more ids, which a decoder's sequence cannot.
        for params in params_list:
            yield engine, params
        return
    from llmcli.cli.batch import _Submitted

    decoder = engine.decoder(min(len(params_list), cap))
    waiting = deque(params_list)
    running: deque = deque()

    def admit() -> None:
        while decoder.free() and waiting:
            running.append(decoder.submit(prompt, waiting.popleft()))

    decoder.admit = admit
    try:
        admit()
        while running:
            seq = running.popleft()
            yield _Submitted(engine, seq), seq.params
            admit()
    finally:
        decoder.close()
