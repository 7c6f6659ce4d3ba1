"""The prepared GPU check (``llmcli bench --suite gpu [--quick]``): on a CUDA machine with no
network and no model files, run the GPU-marked tests (``pytest -m gpu tests/test_gpu.py``) and
benchmark the torch backend on randomly initialised models built from configs
(``gpu_models``): tokens/s eager, compiled (static cache + ``torch.compile``) and plain
transformers ``model.generate`` on the same weights, each as a fraction of the memory-bandwidth
bound (measured device copy bandwidth ÷ weight bytes read per token), time to first token and
prompt tokens/s. One table on stdout; pytest's report on stderr; a failed test fails the command.
"""

from __future__ import annotations

import gc
import importlib.util
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from llmcli.errors import BackendError, LlmcliError, UsageError

QUICK_MODELS = ("smollm2-135m", "llama-1b")
FULL_MODELS = ("smollm2-135m", "llama-1b", "llama-8b")
PROMPT_TOKENS = 128
TEST_FILE = Path(__file__).resolve().parents[2] / "tests" / "test_gpu.py"


def _log(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


@dataclass
class GpuResult:
    model: str
    params: int
    dtype: str
    eager: float  # generation tok/s, llmcli's eager loop
    compiled: float | None  # generation tok/s with --compile (None: not measured)
    plain: float  # generation tok/s, transformers model.generate on the same weights
    bound: float  # tok/s the memory bandwidth allows: bandwidth / weight bytes
    ttft_ms: float
    prompt_tps: float
    compile_s: float | None = None  # warm-up time of the compiled backend (compilation, graph capture)

    def cells(self) -> list[str]:
        def pct(x):
            return f"{100 * x / self.bound:.0f} %" if x and self.bound else "–"

        best = max(self.eager, self.compiled or 0.0)
        return [self.model, f"{self.params / 1e9:.2f}B", self.dtype, f"{self.eager:.1f}",
                f"{self.compiled:.1f}" if self.compiled else "–", f"{self.plain:.1f}",
                f"{best / self.plain:.2f}×" if self.plain else "–", f"{self.bound:.0f}", pct(self.eager),
                pct(self.compiled), f"{self.ttft_ms:.1f}", f"{self.prompt_tps:.0f}",
                f"{self.compile_s:.0f}" if self.compile_s is not None else "–"]


HEADER = ["model", "params", "dtype", "eager tok/s", "compiled tok/s", "generate tok/s", "best ÷ generate",
          "bound tok/s", "eager % of bound", "compiled % of bound", "TTFT ms", "prompt tok/s", "compile s"]


def render(results: list[GpuResult], title: str) -> str:
    lines = [f"### {title}", "", "| " + " | ".join(HEADER) + " |", "|" + " --- |" * len(HEADER)]
    lines += ["| " + " | ".join(r.cells()) + " |" for r in results]
    return "\n".join(lines)


def _backend(name: str, device: str, dtype: str, compile: bool, ctx: int, **overrides):
    from llmcli.backends.select import BackendOptions
    from llmcli.backends.torch import TorchBackend
    from llmcli.bench.gpu_models import build
    from llmcli.store.refs import ModelRef

    loaded = build(name, device, dtype, **overrides)
    opts = BackendOptions(device=device, dtype=dtype, ctx=ctx, compile=compile)
    return TorchBackend(ModelRef(Path(f"random-{name}"), "hf"), opts, reason=f"random-init {name}", loaded=loaded)


def _runs(backend, ids, gen_tokens: int, repeats: int, warmups: int):
    """GenerationStats of ``repeats`` greedy runs with the prefix cache cleared (after warm-ups)."""
    from llmcli.backends.base import Finish, SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=gen_tokens, seed=1234)

    def once():
        backend.reset()
        for ev in backend.stream(ids, params):
            if isinstance(ev, Finish):
                return ev.stats
        raise RuntimeError("stream ended without Finish")

    for _ in range(warmups):
        once()
    return [once() for _ in range(repeats)]


def _free(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def measure(name: str, device: str, dtype: str, *, compiled: bool, gen_tokens: int, repeats: int,
            bandwidth: float) -> GpuResult:
    """One table row: config ``name`` with random weights on ``device``."""
    from llmcli.bench.gpu_models import parameter_count
    from llmcli.bench.torch import _plain_once, _prompt_ids

    med = statistics.median
    ctx = PROMPT_TOKENS + gen_tokens + 64
    b = _backend(name, device, dtype, False, ctx)
    weight_bytes = sum(p.numel() * p.element_size() for p in b.model.parameters())
    ids = _prompt_ids(b, PROMPT_TOKENS)
    stats = _runs(b, ids, gen_tokens, repeats, warmups=1)
    eager = med(s.generation_tokens_per_second for s in stats)
    ttft = med(s.time_to_first_token for s in stats) * 1000
    prompt_tps = med(s.prompt_tokens_per_second for s in stats)
    _plain_once(b.model, ids, 4)  # warm-up
    plain = med(_plain_once(b.model, ids, gen_tokens)[1] for _ in range(repeats))
    b.close()
    del b
    _free(device)
    fast = compile_s = None
    if compiled:
        b = _backend(name, device, dtype, True, ctx)
        t0 = time.perf_counter()
        _runs(b, ids, gen_tokens, 2, warmups=0)  # compilation and CUDA-graph capture happen here
        compile_s = time.perf_counter() - t0
        fast = med(s.generation_tokens_per_second for s in _runs(b, ids, gen_tokens, repeats, warmups=0))
        b.close()
        del b
        _free(device)
    r = GpuResult(name, parameter_count(name), dtype, eager, fast, plain, bandwidth / weight_bytes, ttft, prompt_tps,
                  compile_s)
    _log("  " + " | ".join(f"{h}: {c}" for h, c in zip(HEADER, r.cells())))
    return r


def run_gpu_tests() -> int:
    """pytest -m gpu on tests/test_gpu.py; its report goes to stderr (stdout carries the table)."""
    if not TEST_FILE.is_file():
        raise UsageError(f"the GPU tests are not here ({TEST_FILE}): the check runs from a source checkout",
                         "run it from the repository (PYTHONPATH=. python -m llmcli bench --suite gpu)")
    if importlib.util.find_spec("pytest") is None:
        raise UsageError("the GPU check needs pytest, which is not installed",
                         "install it from the wheel folder: see docs/performance.md")
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", str(TEST_FILE)]
    _log("running " + " ".join(cmd[1:]))
    return subprocess.run(cmd, stdout=sys.stderr, stderr=sys.stderr, cwd=str(TEST_FILE.parents[1])).returncode


def cuda_or_error():
    """The torch module, when it sees a CUDA GPU."""
    import torch

    if not torch.cuda.is_available():
        raise BackendError(f"the gpu suite needs a CUDA GPU, and torch {torch.__version__} sees none "
                           f"(built with CUDA {torch.version.cuda or 'none'})",
                           "run it on a machine with an NVIDIA GPU and a CUDA build of torch (docs/performance.md)")
    return torch


def run_check(*, quick: bool, repeats: int | None, tests: bool = True) -> str:
    """The whole check; returns the table. Raises after the table is printed when a test failed."""
    torch = cuda_or_error()
    from llmcli.backends.torch_env import resolve_dtype, torch_facts
    from llmcli.bench.torch import _memory_bandwidth

    t0 = time.perf_counter()
    rc = run_gpu_tests() if tests else 0
    _log(f"gpu tests: {'passed' if rc == 0 else f'FAILED (pytest exit {rc})'} in {time.perf_counter() - t0:.0f} s")
    dtype = resolve_dtype(None, "cuda:0", torch_facts())[0]
    bw = _memory_bandwidth("cuda")
    name = torch.cuda.get_device_name(0)
    models = QUICK_MODELS if quick else FULL_MODELS
    gen = 64 if quick else 128
    reps = repeats or (2 if quick else 3)
    _log(f"{name}: device copy bandwidth {bw / 1e9:.0f} GB/s; models {', '.join(models)}; {PROMPT_TOKENS}-token "
         f"prompt, {gen} generated tokens, median of {reps}")
    results = []
    for m in models:
        _log(f"benchmarking {m} …")
        results.append(measure(m, "cuda", dtype, compiled=True, gen_tokens=gen, repeats=reps, bandwidth=bw))
    table = render(results, f"suite: gpu{' --quick' if quick else ''} ({name}, {bw / 1e9:.0f} GB/s copy bandwidth, "
                            f"torch {torch.__version__}, {time.perf_counter() - t0:.0f} s)")
    if rc != 0:
        sys.stdout.write(table + "\n\n")
        sys.stdout.flush()
        raise LlmcliError(f"GPU check failed: pytest -m gpu exited {rc}", "see pytest's report above on stderr")
    return table
