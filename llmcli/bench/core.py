"""Core benchmark: llmcli's llama.cpp path against llama-cpp-python's own
``Llama.generate`` loop on the same model, threads and context, interleaved in one
process so machine noise hits both sides alike. Reports medians and ratios."""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import time

from llmcli.bench.table import Row

PROMPT_TOKENS = 128
GEN_TOKENS = 64


@contextlib.contextmanager
def same_model_params():
    """Make ``Llama()`` load with the model parameters our backend uses (the AMX workaround), so a
    reference built inside this block runs the same kernels and does not crash where ours would not."""
    import llama_cpp
    import llama_cpp.llama_cpp as low_level  # the module Llama() looks the defaults up in

    from llmcli.backends.llamacpp import model_params

    original = low_level.llama_model_default_params
    low_level.llama_model_default_params = lambda: model_params(llama_cpp)
    try:
        yield
    finally:
        low_level.llama_model_default_params = original


def _prompt_ids(backend, n: int) -> list[int]:
    text = ("The history of computing is a story of people, machines and ideas that shaped the modern world. " * 40)
    ids = backend.tokenize(text, add_special=False, parse_special=False)
    return ids[:n]


def _ours_once(backend, ids, params) -> tuple[float, float, float]:
    """(prompt tok/s, generation tok/s, ttft s), cache cleared so the prompt is really processed."""
    from llmcli.backends.base import Finish

    backend.reset()
    for ev in backend.stream(ids, params):
        if isinstance(ev, Finish):
            s = ev.stats
            return s.prompt_tokens_per_second, s.generation_tokens_per_second, s.time_to_first_token
    raise RuntimeError("stream ended without Finish")


def _ref_once(llm, ids, n_gen: int, greedy: bool) -> tuple[float, float, float]:
    """llama-cpp-python's own loop: Llama.generate with its native sampler chain."""
    llm.reset()
    llm.set_seed(1234)
    kwargs = {"temp": 0.0} if greedy else {"temp": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05}
    t0 = time.perf_counter()
    first = None
    count = 0
    for _tok in llm.generate(ids, reset=True, **kwargs):
        now = time.perf_counter()
        if first is None:
            first = now
        count += 1
        if count >= n_gen:
            break
    end = time.perf_counter()
    ttft = first - t0
    return len(ids) / ttft, (count - 1) / (end - first), ttft


def run(model_path, threads: int | None, repeats: int = 5) -> list[Row]:
    from llama_cpp import Llama

    from llmcli.backends.base import SamplingParams
    from llmcli.backends.llamacpp import LlamaCppBackend

    rows: list[Row] = []
    # First, while this process is small: a child's ru_maxrss starts from its parent's RSS at fork.
    rss_row = _peak_rss(model_path, threads)
    t0 = time.perf_counter()
    ours = LlamaCppBackend(model_path, ctx_cap=2048, threads=threads)
    load_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    # Same attention kernel and batch size as ours: flash attention on, batches of ours.n_batch.
    with same_model_params():
        ref = Llama(model_path=str(model_path), n_ctx=ours.n_ctx, n_batch=ours.n_batch, n_ubatch=ours.n_batch,
                    n_threads=ours.threads, n_threads_batch=ours.threads, flash_attn=True, use_mmap=True,
                    verbose=False)
    load_ref = time.perf_counter() - t0
    ids = _prompt_ids(ours, PROMPT_TOKENS)

    def ignore_eos_params(**kw):
        return SamplingParams(max_tokens=GEN_TOKENS, seed=1234, **kw)

    cases = [
        ("greedy", ignore_eos_params(temperature=0.0), True),
        ("sampled (t=0.8, top-k 40, top-p 0.95, min-p 0.05)", ignore_eos_params(), False),
    ]
    for label, params, greedy in cases:
        o_pp, o_tg, o_ttft, r_pp, r_tg, r_ttft = [], [], [], [], [], []
        _ours_once(ours, ids, params)  # warm-up both
        _ref_once(ref, ids, GEN_TOKENS, greedy)
        for _ in range(repeats):
            a = _ours_once(ours, ids, params)
            b = _ref_once(ref, ids, GEN_TOKENS, greedy)
            o_pp.append(a[0]); o_tg.append(a[1]); o_ttft.append(a[2])  # noqa: E702
            r_pp.append(b[0]); r_tg.append(b[1]); r_ttft.append(b[2])  # noqa: E702
        med = statistics.median
        rows.append(Row(f"generation tok/s, {label}", med(o_tg), med(r_tg), "tok/s", "llama-cpp-python Llama.generate"))
        rows.append(Row(f"prompt processing tok/s ({len(ids)} tok), {label}", med(o_pp), med(r_pp), "tok/s",
                        "llama-cpp-python Llama.generate"))
        rows.append(Row(f"time to first token, {label}", med(o_ttft) * 1000, med(r_ttft) * 1000, "ms",
                        "llama-cpp-python Llama.generate", lower_is_better=True))
    # What bit-exact prefix reuse costs: llama.cpp's defaults (flash attention on, 512-token batches)
    # against ours (flash attention on, prompts in aligned batches of ALIGN positions).
    with same_model_params():
        ref_fa = Llama(model_path=str(model_path), n_ctx=ours.n_ctx, n_batch=512, n_ubatch=512,
                       n_threads=ours.threads, n_threads_batch=ours.threads, flash_attn=True, use_mmap=True,
                       verbose=False)
    _ref_once(ref_fa, ids, 2, True)
    fa_pp, fa_tg, plain_pp, plain_tg = [], [], [], []
    for _ in range(repeats):
        a = _ours_once(ours, ids, cases[0][1])
        b = _ref_once(ref_fa, ids, GEN_TOKENS, True)
        plain_pp.append(a[0]); plain_tg.append(a[1]); fa_pp.append(b[0]); fa_tg.append(b[1])  # noqa: E702
    rows.append(Row(f"prompt processing tok/s ({len(ids)} tok), greedy", statistics.median(plain_pp),
                    statistics.median(fa_pp), "tok/s", "Llama.generate, flash attention on, 512-token batches"))
    rows.append(Row("generation tok/s, greedy", statistics.median(plain_tg), statistics.median(fa_tg), "tok/s",
                    "Llama.generate, flash attention on, 512-token batches"))
    del ref_fa
    # The cost of no_repeat_ngram_size (a Python callback in the sampler chain), against our own plain greedy.
    plain = [_ours_once(ours, ids, cases[0][1])[1] for _ in range(repeats)]
    ngram = [_ours_once(ours, ids, cases[0][1].replace(no_repeat_ngram_size=3))[1] for _ in range(repeats)]
    rows.append(Row("generation tok/s with --no-repeat-ngram-size 3", statistics.median(ngram),
                    statistics.median(plain), "tok/s", "llmcli greedy without it"))
    rows.append(Row("model load time", load_ours * 1000, load_ref * 1000, "ms", "llama_cpp.Llama()",
                    lower_is_better=True))
    ours.close()
    del ref
    rows.append(rss_row)
    rows.append(_help_time())
    return rows


def _child_peak_rss_mib(cmd: list[str]) -> float:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak, not the max over all children
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])}… failed with exit {code}")
    return usage.ru_maxrss / 1024


_REF_SCRIPT = """
import sys
from llama_cpp import Llama
from llmcli.bench.core import same_model_params
with same_model_params():
    llm = Llama(model_path=sys.argv[1], n_ctx=4096, n_threads=int(sys.argv[2]), flash_attn=False, verbose=False)
ids = llm.tokenize(b"Once upon a time")
for i, _ in enumerate(llm.generate(ids, temp=0.0)):
    if i >= 63:
        break
"""


def _peak_rss(model_path, threads) -> Row:
    """Peak RSS of a whole `llmcli generate` process vs a bare llama-cpp-python process doing the same work."""
    from llmcli.backends.hardware import physical_cores

    n = threads or physical_cores()
    ours = _child_peak_rss_mib([sys.executable, "-m", "llmcli", "generate", "-m", str(model_path), "--temperature",
                                "0", "--max-tokens", "64", "--ctx", "4096", "--threads", str(n), "--raw",
                                "Once upon a time"])
    ref = _child_peak_rss_mib([sys.executable, "-c", _REF_SCRIPT, str(model_path), str(n)])
    return Row("peak RSS of a 64-token generation process (4096 window)", ours, ref, "MiB",
               "python + llama_cpp.Llama.generate", lower_is_better=True)


def _help_time(repeats: int = 7) -> Row:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "llmcli", "--help"], capture_output=True, check=True,
                       stdin=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], capture_output=True, check=True)
    bare = time.perf_counter() - t0
    return Row("`llmcli --help` wall time (target < 300 ms)", statistics.median(times) * 1000, bare * 1000, "ms",
               "bare `python -c pass`", lower_is_better=True)
