"""``llmcli finetune``: flags → a ``finetune.run.Request``; progress and the summary. No training logic."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from llmcli import params as P
from llmcli.cli import options as o
from llmcli.errors import UsageError

TRAIN = "Training"
EPOCHS = P.Param("epochs", int, "Passes over the training data.", 3, lo=1, hi=10_000, panel=TRAIN, metavar="N")
LR = P.Param("lr", float, "Peak learning rate of AdamW (linear warm-up, then linear decay to 0).", 2e-4, lo=0,
             lo_open=True, hi=1.0, panel=TRAIN, metavar="LR")
SEQ_LEN = P.Param("seq_len", int, "Tokens per training sequence: plain text is packed into blocks of this size; "
                  "longer chat records are cut.", 256, lo=8, hi=P.CTX_MAX, panel=TRAIN, metavar="N")
GRAD_ACCUM = P.Param("grad_accum", int, "Sequences per optimizer step (gradient accumulation).", 1, lo=1,
                     hi=65536, panel=TRAIN, metavar="N")
RANK = P.Param("rank", int, "LoRA rank.", 8, lo=1, hi=4096, panel=TRAIN, metavar="R")
ALPHA = P.Param("alpha", float, "LoRA alpha (the update is scaled by alpha/rank).", 16.0, lo=0, lo_open=True,
                hi=1e6, panel=TRAIN)
DROPOUT = P.Param("dropout", float, "LoRA dropout.", 0.05, lo=0, hi=0.9, panel=TRAIN)
WARMUP = P.Param("warmup", float, "Fraction of the steps with a rising learning rate.", 0.1, lo=0, hi=1,
                 panel=TRAIN)
SEED = P.Param("seed", int, "Seed of the LoRA initialisation, data order and dropout: the same data and seed "
               "give the same adapter bytes on CPU.", 0, lo=0, hi=P.SEED_MAX, panel=TRAIN)
VAL_SPLIT = P.Param("val_split", float, "Hold out this fraction of the examples for validation.", 0.0, lo=0,
                    hi=0.5, panel=TRAIN, metavar="F")
TARGETS = P.Param("targets", str, "Comma-separated layer names LoRA adapts.", panel=TRAIN, metavar="NAMES",
                  default_text="all attention and MLP projections (Llama family), c_attn,c_proj,c_fc (GPT-2)")
AS = P.Param("as_", str, "Store name of the adapter (with --merge: of the merged model).", metavar="NAME",
             default_text="<data file name>-lora")
TABLE = (EPOCHS, LR, SEQ_LEN, GRAD_ACCUM, RANK, ALPHA, DROPOUT, WARMUP, SEED, VAL_SPLIT)


def _opt(p: P.Param, *flags: str):
    return o.option_type(p) if not flags else Annotated[Optional[str], typer.Option(
        *flags, help=p.help_text(), metavar=p.metavar or "TEXT", rich_help_panel=p.panel, show_default=False)]


@o.table_options("model", "device", "dtype", "threads")
def finetune(
    data: Annotated[str, typer.Argument(help="Training data: a UTF-8 text file, or JSONL with one "
                                        '{"messages": [...]} record a line.', show_default=False)],
    as_name: _opt(AS, "--as") = None,
    val: Annotated[Optional[str], typer.Option("--val", help="Validation data file (same format as DATA).",
                                               metavar="FILE", rich_help_panel=TRAIN, show_default=False)] = None,
    val_split: _opt(VAL_SPLIT) = None,
    epochs: _opt(EPOCHS) = None,
    lr: _opt(LR) = None,
    seq_len: _opt(SEQ_LEN) = None,
    grad_accum: _opt(GRAD_ACCUM) = None,
    rank: _opt(RANK) = None,
    alpha: _opt(ALPHA) = None,
    dropout: _opt(DROPOUT) = None,
    warmup: _opt(WARMUP) = None,
    targets: _opt(TARGETS) = None,
    seed: _opt(SEED) = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the interrupted run with the same model, data "
                                         "and settings from its last checkpoint.", rich_help_panel=TRAIN)] = False,
    merge: Annotated[bool, typer.Option("--merge", help="Also write base + adapter as a standalone HF folder, "
                                        "registered as the --as name (the adapter gets NAME-lora).",
                                        rich_help_panel=TRAIN)] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object.",
                                           rich_help_panel=o.OUTPUT_PANEL)] = False,
    allow_pickle: o.AllowPickleOpt = False,
    trust_remote_code: o.TrustRemoteCodeOpt = False,
    verbose: o.VerboseOpt = False,
    flags: dict | None = None,
) -> None:
    """Fine-tune a model on your own text with LoRA; the adapter goes into the store.

    Plain text is packed into --seq-len blocks; JSONL chat records train on the assistant turns
    only. Training runs on torch (a GGUF trains on its cached dequantized conversion); the
    adapter then works with generate, chat, perplexity and tokenize on both backends
    (llama.cpp applies it as a GGUF LoRA to the quantized GGUF). Ctrl-C stops after the
    current step and saves a checkpoint; --resume continues it. See docs/finetune.md.

    Examples:

      llmcli finetune notes.txt --as notes --val-split 0.1

      llmcli finetune -m smol chats.jsonl --epochs 3 --lr 2e-4 --as helper
    """
    from llmcli.config import load_settings
    from llmcli.finetune.run import Request
    from llmcli.finetune.train import TrainConfig
    from llmcli.store.records import validate_name

    values = {p.name: p.parse(v, p.flag) if v is not None else p.default for p, v in (
        (EPOCHS, epochs), (LR, lr), (SEQ_LEN, seq_len), (GRAD_ACCUM, grad_accum), (RANK, rank), (ALPHA, alpha),
        (DROPOUT, dropout), (WARMUP, warmup), (SEED, seed), (VAL_SPLIT, val_split))}
    names = tuple(t.strip() for t in (targets or "").split(",") if t.strip())
    if targets is not None and not names:
        raise UsageError(f"invalid --targets {targets!r}: no layer names", "e.g. --targets q_proj,v_proj")
    if val is not None and val_split is not None:
        raise UsageError("--val and --val-split both say where validation data comes from", "give one of them")
    name = validate_name(as_name if as_name is not None else _default_name(data))
    given = o.parse_flags(flags)
    settings = load_settings()
    opts = o.backend_options(settings, given, verbose=verbose, allow_pickle=allow_pickle,
                             trust_remote_code=trust_remote_code, backend="torch")
    cfg = TrainConfig(epochs=values["epochs"], lr=values["lr"], seq_len=values["seq_len"],
                      grad_accum=values["grad_accum"], rank=values["rank"], alpha=values["alpha"],
                      dropout=values["dropout"], targets=names, warmup=values["warmup"], seed=values["seed"])
    adapter_name = validate_name(f"{name}-lora") if merge else name
    req = Request(data, adapter_name, cfg, val=val, val_split=values["val_split"], resume=resume,
                  merge=name if merge else None)
    summary = _run(given["model"], settings, opts, req)
    _report(summary, json_out)


def _default_name(data: str) -> str:
    import re

    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(data).stem).strip("-.") or "data"
    return (stem if stem[0].isalnum() else "d" + stem) + "-lora"


def _run(model: str | None, settings, opts, req) -> dict:
    from llmcli.finetune.run import Hooks, finetune
    from llmcli.output import info, warn
    from llmcli.store.resolve import resolve

    ref = resolve(model, configured=settings.general.get("model"), warn=warn)
    stopping = {"asked": False}

    def on_sigint(signum, frame):
        if stopping["asked"]:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, no checkpoint
        stopping["asked"] = True
        info("\nstopping after this step (Ctrl-C again to abort without a checkpoint)…")

    from llmcli.cli.train_progress import progress

    with progress(sys.stderr) as bar:
        old = signal.signal(signal.SIGINT, on_sigint)
        try:
            return finetune(ref, opts, req, Hooks(notify=info, started=bar.started, step=bar.step, val=bar.val,
                                                  stop=lambda: stopping["asked"]))
        finally:
            signal.signal(signal.SIGINT, old)


def _fmt(x, spec: str = ".4f") -> str:
    return "-" if x is None else format(x, spec)


def _report(s: dict, json_out: bool) -> None:
    from llmcli.output import dumps

    if json_out:
        sys.stdout.write(dumps(s) + "\n")
        sys.stdout.flush()
        return
    rows = [("adapter", f"{s['name']} (LoRA rank {s['rank']} on {', '.join(s['targets'])})"),
            ("base", s["base"]),
            ("data", f"{s['kind']}: {s['train_examples']} training / {s['val_examples']} validation example(s)"),
            ("steps", f"{s['steps']} in {s['epochs']} epoch(s), {s['tokens']} tokens in {s['seconds']:.1f} s "
                      f"({_fmt(s['tokens_per_s'], '.1f')} tokens/s)"),
            ("train loss", _fmt(s["train_loss"]) + " (last epoch)"),
            ("val loss", f"{_fmt(s['val_loss_before'])} → {_fmt(s['val_loss_after'])}"),
            ("val perplexity", f"{_fmt(s['val_ppl_before'], '.3f')} → {_fmt(s['val_ppl_after'], '.3f')}"),
            ("llama.cpp", "GGUF LoRA written" if s["gguf"] else "no GGUF LoRA for this architecture (torch only)")]
    if s["merged"]:
        rows.append(("merged", f"{s['merged']} (standalone HF folder)"))
    width = max(len(k) for k, _ in rows)
    sys.stdout.write("".join(f"{k.ljust(width)}  {v}\n" for k, v in rows))
    sys.stdout.flush()


def register(app: typer.Typer) -> None:
    app.command("finetune")(finetune)
