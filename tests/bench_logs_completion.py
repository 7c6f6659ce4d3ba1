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


def timed(cmd: list[str], env: dict, **kw) -> tuple[float, float, subprocess.CompletedProcess]:
    """Wall and CPU (user + system of the child) seconds of one run. CPU time barely moves with
    machine load, so it is the figure to compare on a shared 2-core box; wall is shown too."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, check=True, **kw)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), proc


def main(n: int, m: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="llmcli-bench-"))
    env = dict(os.environ, LLMCLI_DATA_DIR=str(root / "data"), LLMCLI_CONFIG_DIR=str(root / "config"),
               LLMCLI_CACHE_DIR=str(root / "cache"))
    # Users run from compiled bytecode (pip writes it at install); a shell that sets
    # PYTHONDONTWRITEBYTECODE would make every child recompile llmcli from source (~0.1 s CPU).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ.update(env)
    subprocess.run([sys.executable, "-m", "llmcli", "--help"], env=env, capture_output=True, check=True)  # warm
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
    with_log, without, with_cpu, without_cpu = [], [], [], []
    if m == 0:  # completion and --help only
        with_log = without = with_cpu = without_cpu = [0.0]
    for i in range(m):
        runs = (((), with_log, with_cpu), (("--no-log",), without, without_cpu))
        for flags, out, cpu_out in runs if i % 2 == 0 else runs[::-1]:
            wall, cpu_s, _ = timed(cmd + list(flags), env)
            out.append(wall)
            cpu_out.append(cpu_s)
    print(f"generate: median {median_ms(with_log):.0f} ms logged vs {median_ms(without):.0f} ms --no-log "
          f"(difference {median_ms(with_log) - median_ms(without):+.0f} ms) over {m} each; CPU "
          f"{median_ms(with_cpu):.0f} vs {median_ms(without_cpu):.0f} ms "
          f"(difference {median_ms(with_cpu) - median_ms(without_cpu):+.1f} ms)")

    for name, target in (("smol-q4", model), ("smolfolder", str(Path(model).parent))):
        subprocess.run([sys.executable, "-m", "llmcli", "models", "import", target, "--as", name], env=env,
                       capture_output=True, check=True)
    subprocess.run([sys.executable, "-m", "llmcli", "models", "alias", "tiny", "smol-q4"], env=env, check=True,
                   capture_output=True)
    cenv = dict(env, _LLMCLI_COMPLETE="complete_bash", COMP_WORDS="llmcli generate -m ", COMP_CWORD="3")
    lat, lat_cpu, help_, help_cpu, bare_cpu = [], [], [], [], []
    for _ in range(n):
        wall, cpu_s, r = timed([sys.executable, "-m", "llmcli"], cenv, text=True)
        lat.append(wall)
        lat_cpu.append(cpu_s)
        assert r.stdout.split() == ["smol-q4", "smolfolder", "tiny"], r.stdout
        wall, cpu_s, _ = timed([sys.executable, "-m", "llmcli", "--help"], env)
        help_.append(wall)
        help_cpu.append(cpu_s)
        bare_cpu.append(timed([sys.executable, "-c", "pass"], env)[1])
    print(f"completion of `-m `: median {median_ms(lat):.0f} ms wall (min {min(lat) * 1000:.0f}), "
          f"{median_ms(lat_cpu):.0f} ms CPU over {n}; `--help`: median {median_ms(help_):.0f} ms wall "
          f"(min {min(help_) * 1000:.0f}), {median_ms(help_cpu):.0f} ms CPU; bare `python -c pass`: "
          f"{median_ms(bare_cpu):.0f} ms CPU")


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    main(count, int(sys.argv[2]) if len(sys.argv) > 2 else count)
