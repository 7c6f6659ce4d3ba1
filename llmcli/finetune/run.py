"""One ``llmcli finetune`` run: data → base model on torch → LoRA training → adapter in the store.

The base loads through the torch backend (``TorchBackend``), so a GGUF trains on its cached
dequantized conversion exactly as ``--backend torch`` would run it, with the same tokenizer and
chat template; the adapter is then written for both backends (peft's folder, and a GGUF LoRA that
llama.cpp applies to the original quantized GGUF).
"""

from __future__ import annotations

import math
import secrets
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from llmcli.errors import LlmcliError
from llmcli.finetune import data as D
from llmcli.finetune.train import Outcome, Step, TrainConfig, resolve_targets, run_key, train

ADAPTER_GGUF = "adapter.gguf"


@dataclass(frozen=True)
class Request:
    data: str
    name: str
    cfg: TrainConfig
    val: str | None = None
    val_split: float = 0.0
    resume: bool = False
    merge: str | None = None  # --merge: the name of the merged model


@dataclass(frozen=True)
class Hooks:
    """How the run talks to its caller (the CLI): messages, training progress, Ctrl-C."""

    notify: Callable[[str], None] = lambda s: None
    started: Callable[[int, int, int], None] = lambda total, n_train, n_val: None
    step: Callable[[Step], None] = lambda s: None
    val: Callable[[str, float], None] = lambda when, loss: None
    stop: Callable[[], bool] = lambda: False


def _ppl(loss: float | None) -> float | None:
    return math.exp(min(loss, 700.0)) if loss is not None else None


def finetune(ref, opts, req: Request, hooks: Hooks = Hooks()) -> dict:
    """Train and register ``req.name``; the summary as a JSON-ready dict."""
    from llmcli.backends.torch import TorchBackend
    from llmcli.config import data_dir
    from llmcli.store import adapters

    src = D.read_source(req.data)
    val_src = D.read_source(req.val, "validation data") if req.val else None
    base = adapters.identity(ref)
    key = run_key(base=base.sha256, data=src.sha256, val=val_src and val_src.sha256, split=req.val_split,
                  cfg=req.cfg, name=req.name)
    work = data_dir() / "finetune" / key
    if req.resume and not (work / "checkpoint.pt").is_file():
        raise LlmcliError("no checkpoint to resume for this base model, data and settings",
                          "run without --resume to start training (a checkpoint is written at every epoch end "
                          "and on Ctrl-C)")
    backend = TorchBackend(replace(ref, adapter=None), replace(opts, backend="torch", compile=False),
                           reason="llmcli finetune", notify=hooks.notify, lean=False)
    try:
        cfg = replace(req.cfg, targets=resolve_targets(backend.model, req.cfg))
        examples, cut = D.examples(backend, src, cfg.seq_len)
        if cut:
            hooks.notify(f"{cut} chat record(s) longer than --seq-len {cfg.seq_len} were cut")
        if val_src is not None:
            train_set, val_set = examples, D.examples(backend, val_src, cfg.seq_len, keep_tail=True)[0]
        else:
            train_set, val_set = D.split(examples, req.val_split, cfg.seed)
        per_epoch = math.ceil(len(train_set) / cfg.grad_accum)
        hooks.started(per_epoch * cfg.epochs, len(train_set), len(val_set))
        model, out = train(backend.model, train_set, val_set, cfg, device=backend.device,
                           checkpoint=work / "checkpoint.pt", resume=req.resume, on_step=hooks.step,
                           stop=hooks.stop, on_val=hooks.val)
        training = _training_record(cfg, src, out, len(train_set), len(val_set))
        staged = _stage(model, backend, data_dir() / "adapters", key, cfg)
        from llmcli.store.modelstore import ModelStore

        rec, _ = ModelStore().add_adapter(req.name, staged, base, training)
        merged = _merge(model, backend, req.merge, rec) if req.merge else None
        shutil.rmtree(work, ignore_errors=True)
    finally:
        backend.close()
    return {"name": rec.name, "base": base.spec, "kind": src.kind, "adapter": rec.path,
            "gguf": (Path(rec.path) / ADAPTER_GGUF).is_file(), "merged": merged,
            "train_examples": len(train_set), "val_examples": len(val_set), "steps": out.steps,
            "epochs": cfg.epochs, "train_loss": out.train_loss, "val_loss_before": out.val_before,
            "val_loss_after": out.val_after, "val_ppl_before": _ppl(out.val_before),
            "val_ppl_after": _ppl(out.val_after), "tokens": out.tokens, "seconds": round(out.seconds, 3),
            "tokens_per_s": round(out.tokens / out.seconds, 1) if out.seconds else None,
            "targets": list(out.targets), "rank": cfg.rank, "seed": cfg.seed}


def _training_record(cfg: TrainConfig, src, out: Outcome, n_train: int, n_val: int) -> dict:
    return {"rank": cfg.rank, "alpha": cfg.alpha, "dropout": cfg.dropout, "targets": list(out.targets),
            "seq_len": cfg.seq_len, "epochs": cfg.epochs, "lr": cfg.lr, "grad_accum": cfg.grad_accum,
            "seed": cfg.seed, "steps": out.steps, "data": Path(src.path).name, "data_sha256": src.sha256,
            "data_kind": src.kind, "train_examples": n_train, "val_examples": n_val, "train_loss": out.train_loss,
            "val_loss_before": out.val_before, "val_loss_after": out.val_after}


def _stage(model, backend, root: Path, key: str, cfg: TrainConfig) -> Path:
    """The adapter written into a fresh folder inside the data dir (moved into place by the store)."""
    from peft import get_peft_model_state_dict

    from llmcli.finetune.export import gguf_supported, write_gguf_lora

    staged = root / f".staging-{key}-{secrets.token_hex(4)}"
    try:
        staged.mkdir(parents=True)
        model.save_pretrained(str(staged))
        (staged / "README.md").unlink(missing_ok=True)  # peft's model-card stub
        if gguf_supported(backend.config.model_type):
            write_gguf_lora(get_peft_model_state_dict(model), backend.config, cfg.alpha, staged / ADAPTER_GGUF)
    except Exception as e:  # noqa: BLE001 - OSError, or safetensors' own error type for the same causes
        shutil.rmtree(staged, ignore_errors=True)
        if isinstance(e, LlmcliError):
            raise
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise LlmcliError(f"cannot write the adapter to {staged}: {why}",
                          "free some disk space and train again (nothing was registered)") from None
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return staged


def _merge(model, backend, name: str, adapter_rec) -> str:
    """--merge: base + adapter as a standalone HF folder, imported into the store as ``name``."""
    from llmcli.config import data_dir
    from llmcli.finetune.export import merge
    from llmcli.store.modelstore import ModelStore

    out = data_dir() / "merged" / f"{adapter_rec.name.replace('/', '-')}-{secrets.token_hex(4)}"
    try:
        out.mkdir(parents=True)
        merge(model, out)
        for f in Path(backend.folder).iterdir():
            if f.name.startswith(("tokenizer", "special_tokens", "chat_template")) and f.is_file():
                shutil.copy2(f, out / f.name)
        return ModelStore().import_model(str(out), name).name
    except OSError as e:
        shutil.rmtree(out, ignore_errors=True)
        raise LlmcliError(f"cannot write the merged model to {out}: {e.strerror or e}") from None
