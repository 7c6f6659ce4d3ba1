"""``llmcli pull`` and ``llmcli models …``: the model store on the command line.

Heavy imports (huggingface_hub, gguf, rich) happen inside the commands, so ``llmcli --help``
stays fast."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from llmcli.errors import StoreError, UsageError

models_app = typer.Typer(
    name="models",
    help="List, inspect, import, alias, verify and remove models in the local store.",
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


def _ago(ts: str | None) -> str:
    if not ts:
        return "never"
    try:
        then = time.mktime(time.strptime(ts, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    except (ValueError, OverflowError):
        return ts
    s = max(0, time.time() - then)
    for unit, div in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= div:
            return f"{int(s // div)} {unit} ago"
    return "just now"


def _source(rec: dict) -> str:
    if rec.get("source") == "import":
        return f"import: {rec.get('path')}"
    src = rec.get("repo", "?")
    if rec.get("revision") and rec.get("revision") != "main":
        src += f"@{rec['revision']}"
    return src


# ---------------------------------------------------------------- pull

def pull(
    spec: Annotated[str, typer.Argument(help="OWNER/REPO (HF format, or a GGUF repo: Q4_K_M picked), "
                                        "OWNER/REPO:QUANT, or OWNER/REPO/FILE.gguf.", show_default=False)],
    revision: Annotated[Optional[str], typer.Option("--revision", "-r", help="Branch, tag or commit. [default: main]",
                                                    show_default=False)] = None,
    name: Annotated[Optional[str], typer.Option("--as", help="Store name for the model. [default: REPO:QUANT "
                                                "or REPO]", show_default=False)] = None,
    token: Annotated[Optional[str], typer.Option("--token", help="Hugging Face access token for private or "
                                                 "gated repositories. [default: $HF_TOKEN]", show_default=False)] = None,
    fmt: Annotated[Optional[str], typer.Option("--format", help="gguf or hf, when a repository has both.",
                                               show_default=False)] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", "-n", help="Show which files would be downloaded, and why; "
                                          "download nothing.")] = False,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Download a model from the Hugging Face hub into the HF cache and register it.

    Every file is checked against the hub's sha256 before the model is registered.
    HF_HOME, HF_TOKEN, HF_ENDPOINT and HF_HUB_OFFLINE are respected."""
    from llmcli.cli.progress import download_progress
    from llmcli.store.metadata import human_bytes
    from llmcli.store.pull import pull as do_pull

    _hf_logs(verbose)
    notify = (lambda s: None) if quiet else (lambda s: _info(f"note: {s}"))
    if dry_run:
        return _dry_run(spec, name=name, revision=revision, token=token, fmt=fmt, json_out=json_out, notify=notify)
    with download_progress(quiet) as bar:
        name, rec, _ = do_pull(spec, name=name, revision=revision, token=token, fmt=fmt, tqdm_class=bar,
                               notify=notify)
    if json_out:
        _out(_dumps({"name": name, **rec}))
    if not quiet:
        what = rec["repo"] + (f":{rec['quant']}" if rec.get("quant") else "")
        _info(f"pulled {what} as {name!r}: {human_bytes(rec['size'])} in {len(rec['files'])} file(s), "
              f"sha256 verified (commit {rec['commit'][:12]})")


def _dry_run(spec, *, name, revision, token, fmt, json_out, notify) -> None:
    from llmcli.store import hub, registry
    from llmcli.store.metadata import human_bytes

    p = hub.plan(spec, revision=revision, token=token, fmt=fmt)
    name = registry.validate_name(name or p.default_name)
    if p.note:
        notify(p.note)
    if json_out:
        _out(_dumps({"name": name, "repo": p.repo_id, "revision": p.revision, "commit": p.commit,
                     "format": p.format, "quant": p.quant, "size": p.total_size, "note": p.note,
                     "files": [{"name": f.name, "size": f.size, "sha256": f.sha256} for f in p.files]}))
        return
    what = p.repo_id + (f":{p.quant}" if p.quant else "")
    _out(f"would pull {what} ({p.format}, commit {p.commit[:12]}) as {name!r}: {human_bytes(p.total_size)}")
    for f in p.files:
        _out(f"  {f.name}  {human_bytes(f.size)}")


# ---------------------------------------------------------------- list

@models_app.command("list")
def list_models(
    json_out: JsonOpt = False,
    all_: Annotated[bool, typer.Option("--all", "-a", help="Also list partial downloads left in the HF cache.")] = False,
) -> None:
    """Registered models: name, source, format, quant, size, last used."""
    from llmcli.store import registry
    from llmcli.store.metadata import human_bytes

    data = registry.load()
    default = data.get("default")
    rows = []
    for name in sorted(data["models"], key=str.lower):
        rec = data["models"][name]
        rows.append({
            "name": name, "aliases": registry.aliases_of(data, name), "default": name == default,
            "source": rec.get("source"), "repo": rec.get("repo"), "revision": rec.get("revision"),
            "commit": rec.get("commit"), "format": rec.get("format"), "quant": rec.get("quant"),
            "size": rec.get("size"), "path": rec.get("path"), "added": rec.get("added"),
            "last_used": rec.get("last_used"), "present": Path(rec.get("path", "")).exists(),
        })
    partials = []
    if all_:
        from llmcli.store.cache import partial_downloads

        partials = [{"path": str(p.path), "size": p.size, "age_s": round(p.age_s), "active": p.active}
                    for p in partial_downloads()]
    if json_out:
        obj = {"default": default, "models": rows, "aliases": data["aliases"]}
        if all_:
            obj["partial_downloads"] = partials
        _out(_dumps(obj))
        return
    if not rows:
        _info("no models in the store yet: `llmcli pull OWNER/REPO:QUANT` or `llmcli models import FILE.gguf`")
    else:
        table = [("NAME", "SOURCE", "FORMAT", "QUANT", "SIZE", "LAST USED")]
        for r in rows:
            label = r["name"] + (" *" if r["default"] else "") + ("" if r["present"] else " (missing)")
            table.append((label, _source(data["models"][r["name"]]), r["format"] or "?", r["quant"] or "-",
                          human_bytes(r["size"]), _ago(r["last_used"])))
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
        for row in table:
            _out("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])
        if default:
            _out("* default model (used when -m is omitted)")
        for alias, target in sorted(data["aliases"].items()):
            _out(f"alias {alias} -> {target}")
    if all_:
        if partials:
            _out("")
            _out("partial downloads (`llmcli models prune` removes the stale ones):")
            for p in partials:
                state = "downloading now" if p["active"] else "stale"
                _out(f"  {p['path']}  {human_bytes(p['size'])}  {state}")
        else:
            _out("no partial downloads")


# ---------------------------------------------------------------- show

def _find(name: str) -> tuple[str, dict]:
    from llmcli.store import registry

    found = registry.get(name)
    if found is None:
        raise StoreError(f"no model named {name!r} in the store", "see `llmcli models list`")
    return found


@models_app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="Store name or alias (or a path to a .gguf file / HF folder).",
                                        show_default=False)],
    json_out: JsonOpt = False,
) -> None:
    """Architecture, parameters, context length, quant, chat template, license, files, path and
    the memory a run needs — read from the headers, without loading the weights."""
    from llmcli.store import registry
    from llmcli.store.metadata import human_bytes, human_count, model_metadata
    from llmcli.store.refs import ref_from_path

    data = registry.load()
    found = registry.get(name, data)
    if found is not None:
        key, rec = found
        ref = registry.record_ref(key, rec)
        parts = [Path(f["path"]) for f in rec.get("files", []) if f["path"].lower().endswith(".gguf")]
    else:
        p = Path(name).expanduser()
        if not p.exists():
            raise StoreError(f"no model named {name!r} in the store", "see `llmcli models list`")
        ref = ref_from_path(p)
        key, rec, parts = None, {"source": "path", "path": str(ref.path), "format": ref.format}, None
    meta = model_metadata(ref.format, ref.path, parts if ref.format == "gguf" and parts else None)
    files = rec.get("files") or [{"name": ref.path.name, "path": str(ref.path), "size": _size(ref.path)}]
    license_ = rec.get("license") or meta.get("license")
    if json_out:
        _out(_dumps({"name": key, "aliases": registry.aliases_of(data, key) if key else [],
                     "default": key is not None and data.get("default") == key, "source": rec.get("source"),
                     "repo": rec.get("repo"), "revision": rec.get("revision"), "commit": rec.get("commit"),
                     "quant": rec.get("quant"), "path": str(ref.path), "license": license_,
                     "files": [{k: f.get(k) for k in ("name", "path", "size", "sha256")} for f in files],
                     "metadata": meta}))
        return
    mem = meta["memory"]
    lines = []
    if key:
        extra = []
        if data.get("default") == key:
            extra.append("default")
        if registry.aliases_of(data, key):
            extra.append("aliases: " + ", ".join(registry.aliases_of(data, key)))
        lines.append(("name", key + (f" ({'; '.join(extra)})" if extra else "")))
    if rec.get("source") == "hf":
        lines.append(("source", f"{rec['repo']} @ {rec.get('revision', 'main')} (commit {rec['commit'][:12]})"))
    elif rec.get("source") == "import":
        lines.append(("source", "imported (files stay where they are)"))
    lines += [
        ("format", meta["format"]),
        ("architecture", meta.get("architecture") or "?"),
        ("parameters", f"{human_count(meta.get('parameters'))} ({meta.get('parameters') or '?'})"),
        ("context length", str(meta.get("context_length") or "?")),
    ]
    quant = rec.get("quant")
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
    lines.append(("files", f"{len(files)} ({human_bytes(sum(f.get('size') or 0 for f in files))})"))
    lines += [("", f"  {f['name']}  {human_bytes(f.get('size'))}") for f in files[:20]]
    lines.append(("path", str(ref.path)))
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


def _size(p: Path) -> int:
    if p.is_dir():
        return sum(f.stat().st_size for f in p.iterdir() if f.is_file())
    return p.stat().st_size


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
) -> None:
    """Remove models (and free their files in the HF cache when no other model uses them).

    Imported models are only unregistered: their files are never deleted. Removing an alias
    removes just the alias."""
    from llmcli.store import cache, registry
    from llmcli.store.metadata import human_bytes

    data = registry.load()
    plan = []
    for name in names:
        if name in data["aliases"]:
            plan.append((name, f"alias {name} (of {data['aliases'][name]}; the model stays)"))
            continue
        found = registry.get(name, data)
        if found is None:
            raise StoreError(f"no model named {name!r} in the store", "see `llmcli models list`")
        key, rec = found
        if rec.get("source") == "import":
            what = f"{key} (imported from {rec['path']}; the files are kept)"
        else:
            what = f"{key} ({registry.describe_source(rec)}, {human_bytes(rec.get('size'))} in the HF cache)"
        plan.append((key, what))
    if not yes:
        if not _stdin_is_tty():
            raise UsageError("`models rm` asks for confirmation, but stdin is not a terminal",
                             "pass --yes to remove without asking")
        for _, what in plan:
            _info(f"will remove {what}")
        if not typer.confirm("Remove?", default=False, err=True):
            _info("nothing removed")
            raise typer.Exit(1)
    for key, _ in plan:
        kind, rec, others = registry.remove(key)
        if kind == "alias":
            _info(f"removed alias {key}")
            continue
        freed = cache.release_files(rec, others)
        kept = " (imported files kept)" if rec.get("source") == "import" else ""
        _info(f"removed {key}: freed {human_bytes(freed)}{kept}")


# ---------------------------------------------------------------- import

def _import_name(path: Path) -> str:
    import re

    from llmcli.store import quant as q

    base = path.name
    base = q.SPLIT_RE.sub("", base)
    base = re.sub(r"\.gguf$", "", base, flags=re.I)
    base = re.sub(r"[^A-Za-z0-9._:@+-]+", "-", base).strip("-.") or "model"
    return base if base[0].isalnum() else "m" + base


@models_app.command("import")
def import_model(
    path: Annotated[str, typer.Argument(help="A .gguf file (first part of a split model) or an HF-format folder.",
                                        show_default=False)],
    name: Annotated[Optional[str], typer.Option("--as", help="Store name. [default: the file or folder name]",
                                                show_default=False)] = None,
) -> None:
    """Register a local model without copying it; `models rm` later never deletes its files."""
    import os

    from llmcli.store import quant as q
    from llmcli.store import registry
    from llmcli.store.metadata import human_bytes
    from llmcli.store.refs import ref_from_path

    if "\x00" in path:
        raise UsageError("path contains a NUL byte")
    p = Path(os.path.abspath(Path(path).expanduser()))
    ref = ref_from_path(p)
    target = Path(os.path.abspath(ref.path))
    if ref.format == "gguf":
        files = [target]
        info = q.split_info(target.name)
        if info:
            if info[0] != 1:
                raise UsageError(f"{target.name} is part {info[0]} of a split GGUF", "import the first part (-00001-of-…)")
            files = sorted(target.parent.glob(q.SPLIT_RE.sub("", target.name) + "-*-of-*.gguf"))
            if len(files) != info[1]:
                raise UsageError(f"split GGUF {target.name}: found {len(files)} of {info[1]} parts next to it")
        quant = q.quant_of(target.name)
    else:
        files = sorted(f for f in target.iterdir() if f.is_file())
        quant = None
    name = name or _import_name(target if ref.format == "gguf" else target)
    registry.validate_name(name)
    record = {
        "source": "import", "format": ref.format, "path": str(target), "quant": quant, "license": None,
        "files": [{"name": f.name, "path": str(f), "size": f.stat().st_size} for f in files],
    }
    record["size"] = sum(f["size"] for f in record["files"])
    registry.register(name, record)
    _info(f"imported {target} as {name!r} ({ref.format}, {human_bytes(record['size'])}; not copied)")


# ---------------------------------------------------------------- default / alias

@models_app.command("default")
def default(
    name: Annotated[Optional[str], typer.Argument(help="Store name or alias; omit to print the current default.",
                                                  show_default=False)] = None,
    unset: Annotated[bool, typer.Option("--unset", help="Clear the default model.")] = False,
) -> None:
    """Set (or show) the model used when -m is omitted. A configured `model` (config file or
    LLMCLI_MODEL) still takes precedence."""
    from llmcli.store import registry

    if unset:
        if name:
            raise UsageError("pass either a name or --unset")
        registry.set_default(None)
        _info("default model cleared")
        return
    if name is None:
        current = registry.default_name()
        if current:
            _out(current)
        else:
            _info("no default model set: `llmcli models default NAME`")
        return
    key = registry.set_default(name)
    _info(f"default model: {key}")


@models_app.command("alias")
def alias(
    alias_name: Annotated[str, typer.Argument(metavar="ALIAS", help="The new name.", show_default=False)],
    target: Annotated[Optional[str], typer.Argument(metavar="NAME", help="The model it points at.",
                                                    show_default=False)] = None,
    delete: Annotated[bool, typer.Option("--delete", "-d", help="Remove the alias.")] = False,
) -> None:
    """Give a model another name: `llmcli models alias smol TestOrg/SmolLM2-GGUF:Q4_K_M`."""
    from llmcli.store import registry

    if delete:
        if target:
            raise UsageError("--delete takes only the alias")
        was = registry.delete_alias(alias_name)
        _info(f"removed alias {alias_name} (of {was})")
        return
    if not target:
        raise UsageError("missing the model name", "usage: llmcli models alias ALIAS NAME")
    key = registry.set_alias(alias_name, target)
    _info(f"alias {alias_name} -> {key}")


# ---------------------------------------------------------------- verify / prune

@models_app.command("verify")
def verify(
    name: Annotated[str, typer.Argument(help="Store name or alias.", show_default=False)],
    json_out: JsonOpt = False,
) -> None:
    """Re-hash a pulled model's files against the sha256 (or git sha1) the hub published."""
    import os

    from llmcli.store.verify import git_blob_sha1, sha256_file

    key, rec = _find(name)
    results = []
    for f in rec.get("files", []):
        path = f["path"]
        if not os.path.exists(path):
            results.append({"name": f["name"], "status": "missing", "path": path})
            continue
        if f.get("sha256"):
            got = sha256_file(path)
            ok = got == f["sha256"]
            results.append({"name": f["name"], "status": "ok" if ok else "mismatch", "algorithm": "sha256",
                            "expected": f["sha256"], "actual": got})
        elif f.get("blob_id"):
            got = git_blob_sha1(path)
            ok = got == f["blob_id"]
            results.append({"name": f["name"], "status": "ok" if ok else "mismatch", "algorithm": "git-sha1",
                            "expected": f["blob_id"], "actual": got})
        else:
            results.append({"name": f["name"], "status": "unverifiable", "algorithm": "sha256",
                            "actual": sha256_file(path)})
    if json_out:
        _out(_dumps({"name": key, "files": results}))
    else:
        for r in results:
            detail = f"{r['algorithm']} {r['actual'][:16]}…" if r.get("actual") else r.get("path", "")
            _out(f"{r['status']:<12} {r['name']}  {detail}")
    bad = [r for r in results if r["status"] in ("missing", "mismatch")]
    if bad:
        again = rec.get("spec") or rec.get("repo")
        hint = (f"re-download with `llmcli pull {again} --as {key}`" if rec.get("source") == "hf"
                else "the imported files changed or moved; import them again")
        raise StoreError(f"{len(bad)} file(s) of {key} do not match: {', '.join(r['name'] for r in bad)}", hint)
    if rec.get("source") == "import":
        _info(f"{key} was imported: there are no hub hashes to compare with (sha256 printed above)")
    else:
        _info(f"{key}: all {len(results)} file(s) match the hub's hashes")


@models_app.command("prune")
def prune(
    dry_run: Annotated[bool, typer.Option("--dry-run", "-n", help="Only list what would be removed.")] = False,
) -> None:
    """Remove stale partial downloads (*.incomplete) and blobs no snapshot references from the HF cache."""
    from llmcli.store import cache, registry
    from llmcli.store.metadata import human_bytes

    stale = [p for p in cache.partial_downloads() if not p.active]
    orphans = cache.unreferenced_blobs()
    verb = "would remove" if dry_run else "removed"
    for p in stale:
        _out(f"{verb} partial download {p.path} ({human_bytes(p.size)})")
    for b, size in orphans:
        _out(f"{verb} unreferenced blob {b} ({human_bytes(size)})")
    freed = sum(p.size for p in stale) + sum(s for _, s in orphans)
    if not dry_run:
        cache.remove_paths([p.path for p in stale] + [b for b, _ in orphans])
        folder = registry.registry_path().parent
        for tmp in folder.glob(f".{registry.REGISTRY_FILE}.*.tmp"):
            try:
                tmp.unlink()  # left by a crash between write and rename
            except OSError:
                pass
    for name, rec in registry.load()["models"].items():
        if not Path(rec.get("path", "")).exists():
            _info(f"warning: the files of {name!r} are gone; `llmcli models rm {name}` unregisters it")
    _info(f"{verb} {len(stale)} partial download(s) and {len(orphans)} unreferenced blob(s): "
          f"{human_bytes(freed)}")


def register(app: typer.Typer) -> None:
    app.command("pull")(pull)
    models_app.command("pull")(pull)
    app.add_typer(models_app, name="models")
