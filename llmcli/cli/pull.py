"""``llmcli pull`` (also ``llmcli models pull``): download, verify and register a model."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from llmcli.cli.models import JsonOpt, QuietOpt, VerboseOpt, _dumps, _hf_logs, _info, _out, _record_json, _store
from llmcli.errors import UsageError


def pull(
    spec: Annotated[str, typer.Argument(help="OWNER/REPO (HF format, or a GGUF repo: Q4_K_M picked), "
                                        "OWNER/REPO:QUANT, or OWNER/REPO/FILE.gguf; with --update, a store "
                                        "name.", show_default=False)],
    revision: Annotated[Optional[str], typer.Option("--revision", "-r", help="Branch, tag or commit. [default: main]",
                                                    show_default=False)] = None,
    name: Annotated[Optional[str], typer.Option("--as", help="Store name for the model. [default: REPO:QUANT "
                                                "or REPO]", show_default=False)] = None,
    token: Annotated[Optional[str], typer.Option("--token", help="Hugging Face access token for private or "
                                                 "gated repositories. [default: $HF_TOKEN]", show_default=False)] = None,
    fmt: Annotated[Optional[str], typer.Option("--format", help="gguf or hf, when a repository has both. [default: hf where torch "
                                               "has a CUDA GPU, else gguf]",
                                               show_default=False)] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", "-n", help="Show which files would be downloaded, and why; "
                                          "download nothing.")] = False,
    update: Annotated[bool, typer.Option("--update", "-u", help="Re-pull the pulled model NAME at the commit its "
                                         "revision points at now (same files and quant); nothing to do when "
                                         "it is current.")] = False,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Download a model from the Hugging Face hub into the HF cache and register it.

    Every file is checked against the hub's sha256 before the model is registered.
    `llmcli pull NAME --update` re-pulls a model whose revision moved (see `llmcli models outdated`);
    its old files are freed only after the new ones are verified and registered.
    HF_HOME, HF_TOKEN, HF_ENDPOINT and HF_HUB_OFFLINE are respected."""
    from llmcli.cli.progress import download_progress
    from llmcli.store.metadata import human_bytes

    _hf_logs(verbose)
    notify = (lambda s: None) if quiet else (lambda s: _info(f"note: {s}"))
    if update:
        given = [flag for flag, v in (("--revision", revision), ("--as", name), ("--format", fmt)) if v is not None]
        if given:
            raise UsageError(f"--update keeps the model's revision, name and format: drop {', '.join(given)}",
                             "to pull another revision or format, run `llmcli pull OWNER/REPO …` without --update")
        return _update(spec, token, dry_run, quiet, json_out)
    prefer = _format_preference() if fmt is None else None
    if dry_run:
        p, name = _store().plan_pull(spec, name=name, revision=revision, token=token, fmt=fmt, prefer=prefer)
        if p.note:
            notify(p.note)
        return _show_plan(p, name, json_out)
    with download_progress(quiet) as bar:
        rec = _store().pull(spec, name=name, revision=revision, token=token, fmt=fmt, prefer=prefer, tqdm_class=bar,
                            notify=notify).record
    if json_out:
        _out(_dumps(_record_json(rec)))
    if not quiet:
        what = rec.repo + (f":{rec.quant}" if rec.quant else "")
        _info(f"pulled {what} as {rec.name!r}: {human_bytes(rec.size)} in {len(rec.files)} file(s), "
              f"sha256 verified (commit {rec.commit[:12]})")


def _format_preference() -> tuple[str, str]:
    """For a repository with both weight formats: safetensors where torch has a CUDA GPU to run
    them on, GGUF elsewhere (llama.cpp runs quantized weights fastest on CPU). Asking costs
    nothing on a machine without an NVIDIA driver (no torch import)."""
    from llmcli.backends.hardware import cuda_gpu_name

    gpu = cuda_gpu_name()
    if gpu:
        return "hf", f"a CUDA GPU is here ({gpu}) for the torch backend"
    return "gguf", "no CUDA GPU is here: llama.cpp runs GGUF fastest on CPU"


def _show_plan(p, name: str, json_out: bool) -> None:
    from llmcli.store.metadata import human_bytes

    if json_out:
        _out(_dumps({"name": name, "repo": p.repo_id, "revision": p.revision, "commit": p.commit,
                     "format": p.format, "quant": p.quant, "size": p.total_size, "note": p.note,
                     "files": [{"name": f.name, "size": f.size, "sha256": f.sha256} for f in p.files]}))
        return
    what = p.repo_id + (f":{p.quant}" if p.quant else "")
    _out(f"would pull {what} ({p.format}, commit {p.commit[:12]}) as {name!r}: {human_bytes(p.total_size)}")
    for f in p.files:
        _out(f"  {f.name}  {human_bytes(f.size)}")


def _update(name: str, token: str | None, dry_run: bool, quiet: bool, json_out: bool) -> None:
    from llmcli.cli.progress import download_progress
    from llmcli.store.metadata import human_bytes

    store = _store()
    if dry_run:
        rec, p = store.plan_update(name, token=token)
        if p.commit == rec.commit:
            _info(f"{rec.name} is up to date ({rec.repo}@{rec.revision}, commit {rec.commit[:12]})")
        return _show_plan(p, rec.name, json_out)
    with download_progress(quiet) as bar:
        result = store.update(name, token=token, tqdm_class=bar)
    if result is None:
        rec = store.find(name)
        if json_out:
            _out(_dumps(_record_json(rec)))
        _info(f"{rec.name} is up to date ({rec.repo}@{rec.revision}, commit {rec.commit[:12]}): nothing to do")
        return
    rec, old = result.record, result.replaced
    if json_out:
        _out(_dumps(_record_json(rec)))
    if not quiet:
        _info(f"updated {rec.name}: {rec.repo}@{rec.revision} {old.commit[:12]} → {rec.commit[:12]}, "
              f"{human_bytes(rec.size)} sha256 verified; freed {human_bytes(result.freed)} of the old files")
