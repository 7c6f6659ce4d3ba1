"""Benchmark (not a test): training tokens/s and peak RSS of llmcli's LoRA loop against a plain
peft + transformers loop written the obvious way, on the same model, data, LoRA settings and steps.

    PYTHONPATH=. python tests/bench_finetune.py [--steps 12] [--seq-len 64] [--rounds 2] [--threads N]

Each variant runs in its own subprocess (so peak RSS is its own), alternating, ``--rounds`` times;
the median tokens/s is reported. The model is the embedded SmolLM2 (its cached torch conversion).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

TEXT = "".join(f"The code name of project {n} is {('zorblat', 'quenvix', 'mirthal', 'dravon')[n % 4]}.\n"
               for n in range(1, 400))


THREADS = None  # --threads: torch's CPU threads (default: physical cores)


def _setup(seq_len: int):
    from llmcli.backends.select import BackendOptions
    from llmcli.backends.torch import TorchBackend
    from llmcli.finetune.data import text_blocks
    from llmcli.store.refs import ModelRef
    from llmcli.store.resolve import embedded_model_path

    b = TorchBackend(ModelRef(embedded_model_path(), "gguf"), BackendOptions(backend="torch", device="cpu",
                                                                             dtype="float32", threads=THREADS),
                     lean=False)
    blocks = text_blocks(b.tokenize(TEXT, add_special=True, parse_special=False), seq_len)
    return b, blocks


def run_llmcli(steps: int, seq_len: int) -> dict:
    import tempfile
    from pathlib import Path

    from llmcli.finetune.train import TrainConfig, train

    b, blocks = _setup(seq_len)
    cfg = TrainConfig(epochs=1, lr=1e-3, seq_len=seq_len, seed=0)
    with tempfile.TemporaryDirectory() as d:
        _, out = train(b.model, blocks[:steps], [], cfg, device=b.device, checkpoint=Path(d) / "c.pt", resume=False)
    return {"tokens": out.tokens, "seconds": out.seconds}


def run_plain(steps: int, seq_len: int) -> dict:
    """What a tutorial writes: get_peft_model, model(input_ids, labels=…).loss, AdamW, a linear schedule."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import get_linear_schedule_with_warmup

    from llmcli.finetune.train import LLAMA_TARGETS

    b, blocks = _setup(seq_len)
    torch.manual_seed(0)
    model = get_peft_model(b.model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05,
                                               target_modules=list(LLAMA_TARGETS), task_type="CAUSAL_LM"))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    sched = get_linear_schedule_with_warmup(opt, max(1, steps // 10), steps)
    tokens = 0
    start = time.perf_counter()
    for ex in blocks[:steps]:
        ids = torch.tensor([ex.ids])
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad()
        tokens += len(ex.ids)
    return {"tokens": tokens, "seconds": time.perf_counter() - start}


def _child(kind: str, steps: int, seq_len: int) -> dict:
    import resource

    out = (run_llmcli if kind == "llmcli" else run_plain)(steps, seq_len)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--child", choices=("llmcli", "plain"))
    a = ap.parse_args()
    global THREADS
    THREADS = a.threads
    if a.child:
        print(json.dumps(_child(a.child, a.steps, a.seq_len)))
        return
    results: dict[str, list[dict]] = {"llmcli": [], "plain": []}
    for _ in range(a.rounds):
        for kind in ("plain", "llmcli"):
            extra = ["--threads", str(a.threads)] if a.threads else []
            r = subprocess.run([sys.executable, __file__, "--child", kind, "--steps", str(a.steps), "--seq-len",
                                str(a.seq_len), *extra], capture_output=True, text=True, check=True)
            results[kind].append(json.loads(r.stdout.strip().splitlines()[-1]))
    speed = {k: statistics.median(x["tokens"] / x["seconds"] for x in v) for k, v in results.items()}
    for k, v in results.items():
        print(f"{k:7s} {speed[k]:8.1f} tokens/s  peak RSS {max(x['peak_rss_mb'] for x in v):7.0f} MB  "
              f"({len(v)} runs of {a.steps} steps × {a.seq_len} tokens)")
    print(f"ratio llmcli/plain: {speed['llmcli'] / speed['plain']:.2f}×")


if __name__ == "__main__":
    main()
