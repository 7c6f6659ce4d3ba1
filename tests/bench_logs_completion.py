"""Benchmark (not a test): run-log overhead and completion latency, for docs/performance.md.

    PYTHONPATH=$PWD python tests/bench_logs_completion.py [N [M]]   # M generate pairs (default N)

1. In-process cost of writing one run record (`logs.record`, which opens the database, inserts in
   one transaction, checks the size cap and closes), median of N into a log that already holds
   N records; and the import of llmcli.logs + sqlite3 paid once per process.
2. End-to-end: median wall time of N `llmcli generate --max-tokens 4` runs with and without
   `--no-log` (same model, prompt, seed), alternating, so machine load hits both alike.
3. Completion latency: median wall time of N `_LLMCLI_COMPLETE=complete_bash` runs completing
   `llmcli generate -m ` against a store with 2 models and an alias.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def main(n: int, m: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="llmcli-bench-"))
    env = dict(os.environ, LLMCLI_DATA_DIR=str(root / "data"), LLMCLI_CONFIG_DIR=str(root / "config"),
               LLMCLI_CACHE_DIR=str(root / "cache"))
    os.environ.update(env)
    t = time.perf_counter()
    from llmcli import logs
    import_ms = (time.perf_counter() - t) * 1000

    run = logs.Run("generate", prompt="Why is the sky blue? " * 10, model="smol", backend="llama.cpp",
                   params={"temperature": 0.8, "top_k": 40}, seed=1, prompt_tokens=40, completion_tokens=64,
                   timings={"generation_s": 1.0}, finish_reason="length", output="Because of Rayleigh " * 30)
    logs.record([run])  # creates the database
    costs, cpu = [], []
    for _ in range(n):
        t, c = time.perf_counter(), time.process_time()
        logs.record([run])
        costs.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    print(f"record(): median {median_ms(costs):.2f} ms wall ({median_ms(cpu):.2f} ms CPU), max "
          f"{max(costs) * 1000:.2f} ms over {n} (import llmcli.logs: {import_ms:.1f} ms once)")

    from llmcli.store.resolve import embedded_model_path

    model = str(embedded_model_path())
    cmd = [sys.executable, "-m", "llmcli", "generate", "-m", model, "--temperature", "0", "--max-tokens", "4",
           "--threads", "1", "--seed", "1", "Hello"]
    with_log, without = [], []
    for i in range(m):
        for flags, out in (((), with_log), (("--no-log",), without)) if i % 2 == 0 else \
                (((("--no-log",), without), ((), with_log))):
            t = time.perf_counter()
            subprocess.run(cmd + list(flags), env=env, capture_output=True, check=True)
            out.append(time.perf_counter() - t)
    print(f"generate: median {median_ms(with_log):.0f} ms logged vs {median_ms(without):.0f} ms --no-log "
          f"(difference {median_ms(with_log) - median_ms(without):+.0f} ms) over {m} each")

    for name, target in (("smol-q4", model), ("smolfolder", str(Path(model).parent))):
        subprocess.run([sys.executable, "-m", "llmcli", "models", "import", target, "--as", name], env=env,
                       capture_output=True, check=True)
    subprocess.run([sys.executable, "-m", "llmcli", "models", "alias", "tiny", "smol-q4"], env=env, check=True,
                   capture_output=True)
    cenv = dict(env, _LLMCLI_COMPLETE="complete_bash", COMP_WORDS="llmcli generate -m ", COMP_CWORD="3")
    lat = []
    for _ in range(n):
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "llmcli"], env=cenv, capture_output=True, text=True, check=True)
        lat.append(time.perf_counter() - t)
        assert r.stdout.split() == ["smol-q4", "smolfolder", "tiny"], r.stdout
    help_ = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "llmcli", "--help"], env=env, capture_output=True, check=True)
        help_.append(time.perf_counter() - t)
    print(f"completion of `-m `: median {median_ms(lat):.0f} ms (min {min(lat) * 1000:.0f}) over {n}; "
          f"`--help`: median {median_ms(help_):.0f} ms (min {min(help_) * 1000:.0f})")


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    main(count, int(sys.argv[2]) if len(sys.argv) > 2 else count)
