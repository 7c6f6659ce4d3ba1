"""The training loop: LoRA (peft) on a transformers model, a plain loop rather than ``Trainer``.

Why a plain loop (docs/finetune.md): the job is one model, one sequence per micro-step, AdamW
and a linear schedule — about a hundred lines. ``Trainer`` would add ``accelerate``/``datasets``
machinery, its own logging, checkpoint layout and signal handling, ~1 s of imports, and make
"Ctrl-C stops after this step and ``--resume`` gives the same bytes" harder to guarantee, since
its RNG and data-order state live in several places. Here the whole state of a run is: the
adapter weights, AdamW's moments, the torch RNG (dropout) and the optimizer step count; the data
order of epoch e is a permutation drawn from ``seed`` and e alone.
"""

from __future__ import annotations

import io
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from llmcli.errors import LlmcliError
from llmcli.finetune.data import IGNORE, Example

# Per model_type: the linear layers LoRA adapts. Attention and MLP projections of every block
# (the QLoRA paper's finding: all linear layers beat attention-only at the same budget).
LLAMA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
DEFAULT_TARGETS = {"llama": LLAMA_TARGETS, "mistral": LLAMA_TARGETS, "qwen2": LLAMA_TARGETS,
                   "qwen3": LLAMA_TARGETS, "gemma": LLAMA_TARGETS, "gemma2": LLAMA_TARGETS,
                   "phi3": ("qkv_proj", "o_proj", "gate_up_proj", "down_proj"),
                   "gpt2": ("c_attn", "c_proj", "c_fc"), "gpt_neox": ("query_key_value", "dense",
                                                                     "dense_h_to_4h", "dense_4h_to_h")}
SMOOTHING = 0.9  # exponential moving average of the training loss shown while training


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 3
    lr: float = 2e-4
    seq_len: int = 256
    grad_accum: int = 1
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    targets: tuple[str, ...] = ()  # () = the architecture's default
    warmup: float = 0.1  # fraction of the optimizer steps with a linearly rising learning rate
    weight_decay: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class Step:
    step: int
    total: int
    epoch: int
    loss: float
    smoothed: float
    lr: float
    tokens_per_s: float


@dataclass
class Outcome:
    steps: int
    train_loss: float | None  # mean over the last epoch's steps
    val_before: float | None
    val_after: float | None
    tokens: int  # trained tokens processed in this process
    seconds: float
    targets: tuple[str, ...] = ()
    losses: list[float] = field(default_factory=list)


class Interrupted(LlmcliError):
    """Ctrl-C during training: a checkpoint was written; exit 130 like any interrupted command."""

    exit_code = 130


def default_targets(model) -> tuple[str, ...]:
    kind = getattr(model.config, "model_type", "")
    if kind in DEFAULT_TARGETS:
        return DEFAULT_TARGETS[kind]
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as peft_defaults

    if kind in peft_defaults:
        return tuple(peft_defaults[kind])
    raise LlmcliError(f"no default LoRA target modules for model type {kind!r}",
                      "name the layers with --targets (e.g. --targets q_proj,v_proj)")


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """Linear warm-up over the first ``warmup`` fraction of steps, then linear decay to 0."""
    warm = max(1, round(total * cfg.warmup)) if cfg.warmup > 0 else 0
    if step < warm:
        return cfg.lr * (step + 1) / warm
    return cfg.lr * max(0.0, (total - step) / max(1, total - warm))


def resolve_targets(model, cfg: TrainConfig) -> tuple[str, ...]:
    """The layer names LoRA adapts: ``cfg.targets`` or the architecture's default, each checked."""
    targets = cfg.targets or default_targets(model)
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [t for t in targets if t not in names]
    if missing:
        raise LlmcliError(f"the model has no layers named {', '.join(missing)}",
                          "pick --targets among its linear layers (see the model's config)")
    return tuple(targets)


def wrap(model, cfg: TrainConfig):
    """The model with fresh LoRA layers (initialised from ``seed``)."""
    import warnings

    import torch
    from peft import LoraConfig, get_peft_model

    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")  # deprecations peft triggers
    targets = resolve_targets(model, cfg)
    torch.manual_seed(cfg.seed)
    lora = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=list(targets),
                      bias="none", task_type="CAUSAL_LM",
                      fan_in_fan_out=model.config.model_type == "gpt2")  # GPT-2's Conv1D stores W transposed
    return get_peft_model(model, lora), tuple(targets)


def _nll(model, ex: Example, device):
    """(summed negative log-likelihood over the labelled positions, their count)."""
    import torch

    ids = torch.tensor([ex.ids], dtype=torch.long, device=device)
    labels = torch.tensor([ex.labels[1:]], dtype=torch.long, device=device)
    logits = model(input_ids=ids).logits[:, :-1].float()
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                             ignore_index=IGNORE, reduction="sum")
    return loss, int((labels != IGNORE).sum())


def evaluate(model, examples: list[Example], device) -> float | None:
    """Token-weighted mean loss (nats) over ``examples``; None when there are none."""
    import torch

    if not examples:
        return None
    was_training = model.training
    model.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for ex in examples:
            loss, count = _nll(model, ex, device)
            total += float(loss)
            n += count
    model.train(was_training)
    return total / n if n else None


def _epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    order = list(range(n))
    random.Random(f"{seed}:{epoch}").shuffle(order)
    return order


def _groups(order: list[int], accum: int) -> list[list[int]]:
    return [order[i:i + accum] for i in range(0, len(order), accum)]


def train(model, train_set: list[Example], val_set: list[Example], cfg: TrainConfig, *, device,
          checkpoint: Path, resume: bool, on_step: Callable[[Step], None] = lambda s: None,
          stop: Callable[[], bool] = lambda: False, on_val: Callable[[str, float], None] = lambda w, v: None
          ) -> tuple[object, Outcome]:
    """Train LoRA layers on ``model``; returns (peft model, outcome). ``stop()`` is asked after every
    optimizer step: when true, a checkpoint is written and ``Interrupted`` raised. A checkpoint is
    also written at the end of every epoch, so ``resume`` continues after a crash."""
    import torch

    model, targets = wrap(model, cfg)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    per_epoch = math.ceil(len(train_set) / cfg.grad_accum)
    total = per_epoch * cfg.epochs
    state = {"step": 0, "val_before": None, "losses": []}
    if resume:
        state = _load_checkpoint(checkpoint, model, opt, cfg)
    else:
        state["val_before"] = evaluate(model, val_set, device)
        torch.manual_seed(cfg.seed)  # the dropout stream starts here, resumed or not
    if state["val_before"] is not None and not resume:
        on_val("before", state["val_before"])
    step, losses = state["step"], state["losses"]
    smoothed = None
    for x in losses:
        smoothed = x if smoothed is None else SMOOTHING * smoothed + (1 - SMOOTHING) * x
    start, tokens = time.perf_counter(), 0
    for epoch in range(step // per_epoch, cfg.epochs):
        groups = _groups(_epoch_order(len(train_set), cfg.seed, epoch), cfg.grad_accum)
        for group in groups[step - epoch * per_epoch:]:
            lr = lr_at(step, total, cfg)
            for g in opt.param_groups:
                g["lr"] = lr
            n_tok = sum(train_set[i].trained for i in group)
            step_loss = 0.0
            for i in group:
                loss, _ = _nll(model, train_set[i], device)
                (loss / n_tok).backward()
                step_loss += float(loss.detach())
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            tokens += sum(len(train_set[i].ids) for i in group)
            losses.append(step_loss / n_tok)
            smoothed = losses[-1] if smoothed is None else SMOOTHING * smoothed + (1 - SMOOTHING) * losses[-1]
            elapsed = time.perf_counter() - start
            on_step(Step(step, total, epoch + 1, losses[-1], smoothed, lr, tokens / elapsed if elapsed else 0.0))
            if step < total and stop():
                _save_checkpoint(checkpoint, model, opt, step, state["val_before"], losses)
                raise Interrupted(f"training stopped after step {step} of {total}; a checkpoint was saved",
                                  "run the same command with --resume to continue")
        if step < total:
            _save_checkpoint(checkpoint, model, opt, step, state["val_before"], losses)
    seconds = time.perf_counter() - start
    val_after = evaluate(model, val_set, device)
    if val_after is not None:
        on_val("after", val_after)
    last = losses[-per_epoch:]
    return model, Outcome(step, sum(last) / len(last) if last else None, state["val_before"], val_after, tokens,
                          seconds, targets, losses)


# --- checkpoints ---------------------------------------------------------------------------------

def _save_checkpoint(path: Path, model, opt, step: int, val_before, losses: list[float]) -> None:
    import torch
    from peft import get_peft_model_state_dict

    from llmcli.fileio import atomic_write

    buf = io.BytesIO()
    torch.save({"step": step, "val_before": val_before, "losses": list(losses),
                "adapter": get_peft_model_state_dict(model), "optimizer": opt.state_dict(),
                "rng": torch.get_rng_state()}, buf)
    atomic_write(path, buf.getvalue(), what="the training checkpoint")


def _load_checkpoint(path: Path, model, opt, cfg: TrainConfig) -> dict:
    import torch
    from peft import set_peft_model_state_dict

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable checkpoint is the same answer
        raise LlmcliError(f"the training checkpoint {path} is damaged ({type(e).__name__})",
                          "delete it and train again without --resume") from None
    set_peft_model_state_dict(model, state["adapter"])
    opt.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"])
    return state


def run_key(**parts) -> str:
    """A run's identity: the checkpoint a --resume may continue."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]
