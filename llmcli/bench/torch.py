"""Torch benchmark: llmcli's torch backend against plain transformers ``model.generate`` on the
same model object, threads and greedy settings, interleaved in one process; perplexity
throughput of both backends; the cached GGUF conversion against transformers' own GGUF
load; on a CUDA GPU (when there is one) static cache + torch.compile against eager, and
generation speed as a fraction of the memory-bandwidth bound."""

from __future__ import annotations

import contextlib
import io
import statistics
import sys
import time
from pathlib import Path

from llmcli.bench.table import Row

PROMPT_TOKENS = 128
GEN_TOKENS = 64
PROSE = (
    "Every spring a boat came from the mainland with supplies: flour, coffee, tinned fruit, paraffin, a crate of "
    "books from the county library and a bundle of letters that had piled up over the winter. The keeper read the "
    "letters slowly, one each evening, so that they would last. His sister wrote about her garden and her "
    "grandchildren. An old friend from the navy wrote about politics and complained about the price of tobacco. "
    "Once a year a schoolteacher sent drawings made by her pupils, who had been told that a real lighthouse keeper "
    "still lived on the island and kept the light burning for the ships. He answered every letter carefully, in "
    "pencil, at the kitchen table. He described the seals that slept on the flat rocks below the tower, the puffins "
    "that arrived in April, and the night a cargo ship passed so close that he could hear music from its galley. "
    "He never wrote about loneliness, because he did not feel lonely. The island was small, but it was never quiet, "
    "and the work gave shape to his days. When the engineers finally came to install an automatic lamp, they were "
    "polite and a little embarrassed. They explained that the new light would switch itself on at dusk and off at "
    "dawn, that it would send a signal to the harbour office if anything went wrong, and that nobody would need to "
    "live on the island any more.")


def _log(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def _prompt_ids(backend, n: int) -> list[int]:
    text = "The history of computing is a story of people, machines and ideas that shaped the modern world. " * 40
    return backend.tokenize(text, add_special=False, parse_special=False)[:n]


def _ours_once(backend, ids, params) -> tuple[float, float]:
    """(prompt tok/s, generation tok/s) with the prefix cache cleared."""
    from llmcli.backends.base import Finish

    backend.reset()
    for ev in backend.stream(ids, params):
        if isinstance(ev, Finish):
            return ev.stats.prompt_tokens_per_second, ev.stats.generation_tokens_per_second
    raise RuntimeError("stream ended without Finish")


def _plain_once(model, ids, n_gen: int) -> tuple[float, float]:
    """transformers' generate, greedy: prompt rate from a 1-token run, generation rate from
    the difference between an n-token and a 1-token run."""
    import torch

    inp = torch.tensor([ids], device=model.device)
    mask = torch.ones_like(inp)

    def run(n: int) -> float:
        t0 = time.perf_counter()
        model.generate(inp, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                       pad_token_id=model.config.eos_token_id if isinstance(model.config.eos_token_id, int) else 0)
        if inp.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    t1 = run(1)
    tn = run(n_gen)
    return len(ids) / t1, (n_gen - 1) / max(tn - t1, 1e-9)


def hf_folder_for(model_path: Path) -> Path:
    """The HF folder to benchmark: the model itself, or the cached conversion of a GGUF."""
    model_path = Path(model_path)
    if model_path.is_dir():
        return model_path
    from llmcli.backends.gguf_convert import ensure_converted
    from llmcli.config import cache_dir

    return ensure_converted(model_path, cache_dir(), notify=_log)


def run(model_path, threads: int | None, repeats: int = 5) -> list[Row]:
    from llmcli.backends.base import SamplingParams
    from llmcli.backends.select import BackendOptions
    from llmcli.backends.torch import TorchBackend
    from llmcli.store.refs import ModelRef

    model_path = Path(model_path)
    is_gguf = model_path.is_file()
    folder = hf_folder_for(model_path)
    rows: list[Row] = []
    greedy = SamplingParams(temperature=0.0, max_tokens=GEN_TOKENS, seed=1234)

    # --- CPU: our loop against plain generate on the same model object -------------------------
    ours = TorchBackend(ModelRef(folder, "hf"), BackendOptions(device="cpu", threads=threads, ctx=2048))
    # load time with torch/transformers already imported (a fresh process adds ≈3 s of imports)
    t0 = time.perf_counter()
    TorchBackend(ModelRef(folder, "hf"), BackendOptions(device="cpu", threads=threads, ctx=2048)).close()
    load_s = time.perf_counter() - t0
    ids = _prompt_ids(ours, PROMPT_TOKENS)
    _ours_once(ours, ids, greedy)  # warm-up both
    _plain_once(ours.model, ids, 4)
    o_pp, o_tg, r_pp, r_tg = [], [], [], []
    for i in range(repeats):
        a = _ours_once(ours, ids, greedy)
        b = _plain_once(ours.model, ids, GEN_TOKENS)
        o_pp.append(a[0]); o_tg.append(a[1]); r_pp.append(b[0]); r_tg.append(b[1])  # noqa: E702
        _log(f"  repeat {i + 1}/{repeats}: ours {a[1]:.1f} tok/s, plain generate {b[1]:.1f} tok/s")
    med = statistics.median
    rows.append(Row(f"CPU fp32 generation tok/s, greedy ({ours.threads} threads)", med(o_tg), med(r_tg), "tok/s",
                    "transformers model.generate, same model"))
    rows.append(Row(f"CPU fp32 prompt processing tok/s ({len(ids)} tok)", med(o_pp), med(r_pp), "tok/s",
                    "transformers model.generate, same model"))
    weight_bytes = sum(p.numel() * p.element_size() for p in ours.model.parameters())
    rows.append(_cpu_bound_row(med(o_tg), weight_bytes))

    # --- perplexity throughput: torch against llama.cpp on the same text -------------------------
    text = PROSE
    rows.extend(_perplexity_rows(ours, model_path if is_gguf else None, text, threads, repeats))
    ours.close()

    # --- opening a GGUF on torch: cached conversion against transformers' own GGUF load ----------
    rows.append(Row("torch backend load (imports excluded), HF folder / cached GGUF conversion", load_s * 1000,
                    _direct_gguf_load_s(model_path) * 1000 if is_gguf else load_s * 1000, "ms",
                    "transformers from_pretrained(gguf_file=…)" if is_gguf else "itself (no GGUF)",
                    lower_is_better=True))

    rows.extend(_gpu_rows(folder, repeats))
    return rows


def _cpu_bound_row(tok_s: float, weight_bytes: int) -> Row:
    bw = _memory_bandwidth("cpu")
    bound = bw / weight_bytes
    return Row(f"CPU generation vs memory-bandwidth bound ({bw / 1e9:.1f} GB/s, {weight_bytes / 1e6:.0f} MB weights)",
               tok_s, bound, "tok/s", "bandwidth / weight bytes (ratio = fraction of bound)")


def _perplexity_rows(torch_backend, gguf: Path | None, text: str, threads, repeats: int) -> list[Row]:
    from llmcli.perplexity import score

    ids = torch_backend.tokenize(text, add_special=True, parse_special=False)[:512]
    t_rates = []
    for _ in range(max(1, min(repeats, 3))):
        t_rates.append(score(torch_backend, ids, ctx=512, stride=256).tokens_per_second)
    t_rate = statistics.median(t_rates)
    if gguf is None:
        return [Row("perplexity tokens/s (torch)", t_rate, t_rate, "tok/s", "itself (no GGUF to compare)")]
    from llmcli.backends.llamacpp import LlamaCppBackend

    llama = LlamaCppBackend(gguf, ctx_cap=512, threads=threads)
    try:
        l_rates = [score(llama, ids, ctx=512, stride=256).tokens_per_second for _ in range(max(1, min(repeats, 3)))]
        ppl_t = score(torch_backend, ids, ctx=512, stride=256).perplexity
        ppl_l = score(llama, ids, ctx=512, stride=256).perplexity
    finally:
        llama.close()
    return [
        Row(f"perplexity tokens/s, {len(ids)}-token text, torch fp32 vs llama.cpp", t_rate,
            statistics.median(l_rates), "tok/s", "llmcli llama.cpp backend (quantized GGUF)"),
        Row("perplexity value (torch vs llama.cpp; ratio ≈ 1 means they agree)", ppl_t, ppl_l, "ppl",
            "llmcli llama.cpp backend", lower_is_better=True),
    ]


def _direct_gguf_load_s(gguf: Path) -> float:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmcli.backends.torch_env import quiet_transformers

    with quiet_transformers(), contextlib.redirect_stderr(io.StringIO()):
        t0 = time.perf_counter()
        AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        return time.perf_counter() - t0


def _memory_bandwidth(device: str) -> float:
    """Bytes/s of a large tensor copy (read + write) on the device."""
    import torch

    n = (512 if device != "cpu" else 128) * 2**20 // 4
    src = torch.ones(n, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(5):
        if device != "cpu":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        dst.copy_(src)
        if device != "cpu":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * n * 4 / best


def _gpu_rows(folder: Path, repeats: int) -> list[Row]:
    """CUDA only: eager vs static cache + torch.compile, and the fraction of the bandwidth bound."""
    import torch

    if not torch.cuda.is_available():
        _log("no CUDA GPU: GPU rows skipped")
        return []
    from llmcli.backends.base import SamplingParams
    from llmcli.backends.select import BackendOptions
    from llmcli.backends.torch import TorchBackend
    from llmcli.store.refs import ModelRef

    params = SamplingParams(temperature=0.0, max_tokens=GEN_TOKENS * 2, seed=1234)
    rates = {}
    dtype = None
    weight_bytes = 0
    for compiled in (False, True):
        b = TorchBackend(ModelRef(folder, "hf"), BackendOptions(device="cuda", ctx=2048, compile=compiled))
        dtype = b.info.dtype
        weight_bytes = sum(p.numel() * p.element_size() for p in b.model.parameters())
        ids = _prompt_ids(b, PROMPT_TOKENS)
        for _ in range(3):  # warm-up (compilation, CUDA graph capture)
            _ours_once(b, ids, params)
        rates[compiled] = statistics.median(_ours_once(b, ids, params)[1] for _ in range(repeats))
        plain = statistics.median(_plain_once(b.model, ids, GEN_TOKENS)[1] for _ in range(repeats)) \
            if not compiled else None
        b.close()
        if plain is not None:
            rates["plain"] = plain
    bw = _memory_bandwidth("cuda")
    bound = bw / weight_bytes
    name = torch.cuda.get_device_name(0)
    return [
        Row(f"GPU ({name}, {dtype}) generation tok/s, static cache + torch.compile", rates[True], rates[False],
            "tok/s", "llmcli eager (growing cache)"),
        Row(f"GPU ({dtype}) generation tok/s, eager", rates[False], rates["plain"], "tok/s",
            "transformers model.generate"),
        Row(f"GPU generation vs memory-bandwidth bound ({bw / 1e9:.0f} GB/s, {weight_bytes / 1e6:.0f} MB weights)",
            rates[True], bound, "tok/s", "bandwidth / weight bytes (ratio = fraction of bound)"),
    ]
