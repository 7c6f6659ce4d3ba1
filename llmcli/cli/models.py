"""``llmcli models …`` (and ``llmcli pull``, in pull.py): presentation of what ``ModelStore`` returns.

Heavy imports (huggingface_hub, gguf, rich) happen inside the commands, so ``llmcli --help``
stays fast."""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from typing import Annotated, Optional

import typer

from llmcli.errors import StoreError, UsageError

models_app = typer.Typer(
    name="models",
    help="List, inspect, import, alias, verify and remove models in the local store; search the hub and "
         "find outdated pulls.",
    no_args_is_help=True,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or notes on stderr.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]
VerboseOpt = Annotated[bool, typer.Option("-v", "--verbose", help="Show huggingface_hub logs and tracebacks.")]


def _out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def _info(line: str) -> None:
    from llmcli.output import info

    info(line)


def _dumps(obj) -> str:
    import json

    return json.dumps(obj, ensure_ascii=False, indent=2)


def _hf_logs(verbose: bool) -> None:
    from huggingface_hub.utils import logging as hf_logging

    (hf_logging.set_verbosity_info if verbose else hf_logging.set_verbosity_error)()


def _store():
    from llmcli.store.modelstore import ModelStore

    return ModelStore()


def ago(ts: str | None, now: datetime | None = None) -> str:
    """"3 h ago" for a registry timestamp (UTC): aware datetimes, so daylight saving cannot shift it."""
    from llmcli.store.records import parse_time

    if not ts:
        return "never"
    s = max(0.0, ((now or datetime.now(timezone.utc)) - parse_time(ts)).total_seconds())
    for unit, div in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= div:
            return f"{int(s // div)} {unit} ago"
    return "just now"


def _source(rec) -> str:
    if rec.kind == "adapter":
        return f"adapter on {rec.base}"
    if rec.kind == "imported":
        return f"import: {rec.path}"
    if rec.kind == "remote":
        return rec.describe_source()
    return (rec.repo or "?") + (f"@{rec.revision}" if rec.revision and rec.revision != "main" else "")


def _record_json(rec, reg=None) -> dict:
    out = {"name": rec.name, "kind": rec.kind, "source": rec.source, **rec.to_json()}
    if reg is not None:
        out["aliases"] = reg.aliases_of(rec.name)
        out["default"] = reg.default == rec.name
    return out


def _adapter_lines(rec) -> list[tuple[str, str]]:
    t = dict(rec.training or {})

    def loss(key):
        v = t.get(key)
        return f"{v:.4f}" if isinstance(v, (int, float)) else "-"

    return [("source", f"LoRA adapter (llmcli finetune) on {rec.base}"),
            ("base sha256", rec.base_sha256 or "?"),
            ("adapter", f"rank {t.get('rank', '?')}, alpha {t.get('alpha', '?')}, targets "
                        f"{', '.join(t.get('targets') or []) or '?'}"),
            ("training data", f"{t.get('data', '?')} ({t.get('data_kind', '?')}, sha256 {t.get('data_sha256', '?')})"),
            ("training", f"{t.get('steps', '?')} steps, {t.get('epochs', '?')} epoch(s), lr {t.get('lr', '?')}, "
                         f"seed {t.get('seed', '?')}"),
            ("val loss", f"{loss('val_loss_before')} → {loss('val_loss_after')} (final)")]


# ---------------------------------------------------------------- list

@models_app.command("list")
def list_models(
    json_out: JsonOpt = False,
    all_: Annotated[bool, typer.Option("--all", "-a", help="Also list partial downloads left in the HF cache.")] = False,
    verbose: VerboseOpt = False,
) -> None:
    """Registered models: name, source, format, quant, size, last used."""
    import os

    from llmcli.store.metadata import human_bytes

    store = _store()
    reg = store.snapshot()
    recs = store.list()
    partials = store.partial_downloads() if all_ else []
    if json_out:
        obj = {"default": reg.default, "aliases": dict(reg.aliases),
               "models": [{**_record_json(r, reg), "present": os.path.exists(r.path)} for r in recs]}
        if all_:
            obj["partial_downloads"] = [{"path": str(p.path), "size": p.size, "age_s": round(p.age_s),
                                         "active": p.active} for p in partials]
        _out(_dumps(obj))
        return
    if not recs:
        _info("no models in the store yet: `llmcli pull OWNER/REPO:QUANT` or `llmcli models import FILE.gguf`")
    else:
        table = [("NAME", "SOURCE", "FORMAT", "QUANT", "SIZE", "LAST USED")]
        for r in recs:
            gone = r.kind != "remote" and not os.path.exists(r.path)
            label = r.name + (" *" if reg.default == r.name else "") + (" (missing)" if gone else "")
            table.append((label, _source(r), r.format, r.quant or "-", human_bytes(r.size), ago(r.last_used)))
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
        for row in table:
            _out("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])
        if reg.default:
            _out("* default model (used when -m is omitted)")
        for alias, target in sorted(reg.aliases.items()):
            _out(f"alias {alias} -> {target}")
    if all_:
        if partials:
            _out("")
            _out("partial downloads (`llmcli models prune` removes the stale ones):")
            for p in partials:
                state = "downloading now" if p.active else "stale"
                _out(f"  {p.path}  {human_bytes(p.size)}  {state}")
        else:
            _out("no partial downloads")


# ---------------------------------------------------------------- show

@models_app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="Store name or alias (or a path to a .gguf file / HF folder).",
                                        show_default=False)],
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Architecture, parameters, context length, quant, chat template, license, files, path and
    the memory a run needs — read from the headers, without loading the weights."""
    from llmcli.store.metadata import human_bytes, human_count

    m = _store().show(name)
    rec, meta = m.record, m.metadata
    if rec is not None and rec.kind == "remote":
        if json_out:
            _out(_dumps({"name": rec.name, "aliases": list(m.aliases), "default": m.is_default, "kind": rec.kind,
                         "source": rec.source, "url": rec.url, "model_id": rec.model_id}))
        else:
            _out(f"name: {rec.name}\nsource: {rec.describe_source()} (OpenAI-compatible server; `-m {rec.name}` "
                 "sends requests there)")
        return
    license_ = (rec.license if rec else None) or meta.get("license")
    if json_out:
        _out(_dumps({"name": rec.name if rec else None, "aliases": list(m.aliases), "default": m.is_default,
                     "kind": rec.kind if rec else "path", "source": rec.source if rec else "path",
                     "repo": rec and rec.repo, "revision": rec and rec.revision, "commit": rec and rec.commit,
                     "quant": rec and rec.quant, "path": str(m.ref.path), "license": license_,
                     "files": [{"name": f.name, "path": f.path, "size": f.size, "sha256": f.sha256}
                               for f in m.files],
                     **({"adapter": {"path": rec.path, "base": rec.base, "base_sha256": rec.base_sha256,
                                     **(rec.training or {})}} if rec and rec.kind == "adapter" else {}),
                     "metadata": meta}))
        return
    mem = meta["memory"]
    lines = []
    if rec:
        extra = (["default"] if m.is_default else []) + (["aliases: " + ", ".join(m.aliases)] if m.aliases else [])
        lines.append(("name", rec.name + (f" ({'; '.join(extra)})" if extra else "")))
        if rec.kind == "pulled":
            lines.append(("source", f"{rec.repo} @ {rec.revision} (commit {rec.commit[:12]})"))
        elif rec.kind == "adapter":
            lines += _adapter_lines(rec)
        else:
            lines.append(("source", "imported (files stay where they are)"))
    lines += [
        ("format", meta["format"]),
        ("architecture", meta.get("architecture") or "?"),
        ("parameters", f"{human_count(meta.get('parameters'))} ({meta.get('parameters') or '?'})"),
        ("context length", str(meta.get("context_length") or "?")),
    ]
    quant = rec.quant if rec else None
    ftype = meta.get("file_type")
    if quant and ftype and quant.upper() != str(ftype).upper():
        lines.append(("quant", f"{quant} (file name); weights are {ftype}"))
    else:
        lines.append(("quant" if meta["format"] == "gguf" else "dtype", quant or ftype or "?"))
    if meta.get("has_chat_template"):
        lines.append(("chat template", "yes"))
        lines += [("", "  " + ln) for ln in meta["chat_template"]]
    else:
        lines.append(("chat template", "no"))
    lines.append(("license", license_ or "unknown"))
    lines.append(("files", f"{len(m.files)} ({human_bytes(sum(f.size for f in m.files))})"))
    lines += [("", f"  {f.name}  {human_bytes(f.size)}") for f in m.files[:20]]
    lines.append(("path", str(m.ref.path) if not (rec and rec.kind == "adapter") else f"{rec.path} (over "
                                                                                       f"{m.ref.path})"))
    if mem.get("kv_bytes_per_token"):
        lines.append(("memory", f"weights {human_bytes(mem['weights_bytes'])} + KV cache (f16) "
                                f"{human_bytes(mem['kv_bytes_per_token'])}/token"))
        if "default_ctx" in mem:
            lines.append(("", f"  ≈ {human_bytes(mem['default_total_bytes'])} at the default context "
                              f"({mem['default_ctx']} tokens)"))
        if "max_ctx" in mem:
            lines.append(("", f"  ≈ {human_bytes(mem['max_total_bytes'])} at the maximum context "
                              f"({mem['max_ctx']} tokens)"))
    else:
        lines.append(("memory", f"weights {human_bytes(mem['weights_bytes'])} (KV cache size unknown)"))
    width = max(len(k) for k, _ in lines) + 1
    for k, v in lines:
        _out(f"{(k + ':') if k else '':<{width}} {v}")


# ---------------------------------------------------------------- rm

def _stdin_is_tty() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


@models_app.command("rm")
def rm(
    names: Annotated[list[str], typer.Argument(help="Store names or aliases to remove.", show_default=False)],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    verbose: VerboseOpt = False,
) -> None:
    """Remove models (and free their files in the HF cache when no other model uses them).

    Imported models are only unregistered: their files are never deleted. Removing an alias
    removes just the alias."""
    from llmcli.store.metadata import human_bytes

    store = _store()
    plan = store.removal_plan(names)
    if not yes:
        if not _stdin_is_tty():
            raise UsageError("`models rm` asks for confirmation, but stdin is not a terminal",
                             "pass --yes to remove without asking")
        for r in plan:
            if r.kind == "alias":
                what = f"alias {r.name} (of {r.record.name}; the model stays)"
            elif r.record.kind == "imported":
                what = f"{r.name} (imported from {r.record.path}; the files are kept)"
            else:
                what = f"{r.name} ({r.record.describe_source()}, {human_bytes(r.record.size)} in the HF cache)"
            _info(f"will remove {what}")
        if not typer.confirm("Remove?", default=False, err=True):
            _info("nothing removed")
            raise typer.Exit(1)
    for r in plan:
        done = store.remove(r.name)
        if done.kind == "alias":
            _info(f"removed alias {done.name}")
        else:
            kept = "" if done.record.deletes_files else " (imported files kept)"
            _info(f"removed {done.name}: freed {human_bytes(done.freed)}{kept}")


# ---------------------------------------------------------------- import

@models_app.command("import")
def import_model(
    path: Annotated[str, typer.Argument(help="A .gguf file (first part of a split model), an HF-format folder, or "
                                        "an OpenAI-compatible server's URL (http://HOST:PORT/v1).",
                                        show_default=False)],
    name: Annotated[Optional[str], typer.Option("--as", help="Store name. [default: the file or folder name; for a "
                                                "URL the model id, else the host]", show_default=False)] = None,
    model_id: Annotated[Optional[str], typer.Option("--model-id", help="For a URL: the server's model id (default: "
                                                    "the server's only model).", show_default=False)] = None,
    verbose: VerboseOpt = False,
) -> None:
    """Register a local model without copying it; `models rm` later never deletes its files.
    A URL registers a model served by vLLM, llama-server, … (the URL and model id only, never a key).

    A GGUF whose tensor data does not fit in the file (a cut download) is refused."""
    from llmcli.store.metadata import human_bytes
    from llmcli.store.refs import is_model_url

    if is_model_url(path):
        rec = _store().import_remote(path, model_id, name)
        _info(f"imported {rec.describe_source()} as {rec.name!r} (a server; `-m {rec.name}` uses it)")
        return
    if model_id is not None:
        raise UsageError("--model-id applies to a URL only")
    rec = _store().import_model(path, name)
    _info(f"imported {rec.path} as {rec.name!r} ({rec.format}, {human_bytes(rec.size)}; not copied)")


# ---------------------------------------------------------------- default / alias

@models_app.command("default")
def default(
    name: Annotated[Optional[str], typer.Argument(help="Store name or alias; omit to print the current default.",
                                                  show_default=False)] = None,
    unset: Annotated[bool, typer.Option("--unset", help="Clear the default model.")] = False,
    verbose: VerboseOpt = False,
) -> None:
    """Set (or show) the model used when -m is omitted. A configured `model` (config file or
    LLMCLI_MODEL) still takes precedence."""
    store = _store()
    if unset:
        if name:
            raise UsageError("pass either a name or --unset")
        store.set_default(None)
        _info("default model cleared")
        return
    if name is None:
        current = store.default_name()
        if current:
            _out(current)
        else:
            _info("no default model set: `llmcli models default NAME`")
        return
    _info(f"default model: {store.set_default(name)}")


@models_app.command("alias")
def alias(
    alias_name: Annotated[str, typer.Argument(metavar="ALIAS", help="The new name.", show_default=False)],
    target: Annotated[Optional[str], typer.Argument(metavar="NAME", help="The model it points at.",
                                                    show_default=False)] = None,
    delete: Annotated[bool, typer.Option("--delete", "-d", help="Remove the alias.")] = False,
    verbose: VerboseOpt = False,
) -> None:
    """Give a model another name: `llmcli models alias smol TestOrg/SmolLM2-GGUF:Q4_K_M`."""
    if delete:
        if target:
            raise UsageError("--delete takes only the alias")
        was = _store().delete_alias(alias_name)
        _info(f"removed alias {alias_name} (of {was})")
        return
    if not target:
        raise UsageError("missing the model name", "usage: llmcli models alias ALIAS NAME")
    _info(f"alias {alias_name} -> {_store().set_alias(alias_name, target)}")


# ---------------------------------------------------------------- verify / prune

@models_app.command("verify")
def verify(
    name: Annotated[str, typer.Argument(help="Store name or alias.", show_default=False)],
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Re-hash a pulled model's files against the sha256 (or git sha1) the hub published."""
    v = _store().verify(name)
    rec = v.record
    if json_out:
        _out(_dumps({"name": rec.name, "files": [{k: val for k, val in vars(f).items() if val is not None}
                                                 for f in v.files]}))
    else:
        for f in v.files:
            detail = f"{f.algorithm} {f.actual[:16]}…" if f.actual else f.path
            _out(f"{f.status:<12} {f.name}  {detail}")
    if v.bad:
        hint = (f"re-download with `llmcli pull {rec.spec or rec.repo} --as {rec.name}`" if rec.kind == "pulled"
                else "the imported files changed or moved; import them again")
        raise StoreError(f"{len(v.bad)} file(s) of {rec.name} do not match: {', '.join(f.name for f in v.bad)}",
                         hint)
    if rec.kind == "imported":
        _info(f"{rec.name} was imported: there are no hub hashes to compare with (sha256 printed above)")
    else:
        _info(f"{rec.name}: all {len(v.files)} file(s) match the hub's hashes")


@models_app.command("prune")
def prune(
    dry_run: Annotated[bool, typer.Option("--dry-run", "-n", help="Only list what would be removed.")] = False,
    verbose: VerboseOpt = False,
) -> None:
    """Remove stale partial downloads and blobs no snapshot references from the HF cache.
    A download in progress (its lock held, or written to in the last 24 h without a lock) is kept."""
    from llmcli.store.metadata import human_bytes

    report = _store().prune(dry_run)
    verb = "would remove" if dry_run else "removed"
    for p in report.partials:
        _out(f"{verb} partial download {p.path} ({human_bytes(p.size)})")
    for o in report.orphans:
        _out(f"{verb} unreferenced blob {o.path} ({human_bytes(o.size)})")
    for name in report.missing:
        _info(f"warning: the files of {name!r} are gone; `llmcli models rm {name}` unregisters it")
    _info(f"{verb} {len(report.partials)} partial download(s) and {len(report.orphans)} unreferenced blob(s): "
          f"{human_bytes(report.freed)}")


def register(app: typer.Typer) -> None:
    from llmcli.cli import models_hub  # noqa: F401 - adds `models search` and `models outdated`
    from llmcli.cli.pull import pull

    app.command("pull")(pull)
    models_app.command("pull")(pull)
    app.add_typer(models_app, name="models")
