"""``llmcli models search`` and ``llmcli models outdated``: what the hub has, and which pulled models it
has moved past. (``llmcli pull NAME --update`` is in pull.py.)"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from llmcli.cli.models import JsonOpt, VerboseOpt, _dumps, _hf_logs, _info, _out, _store, models_app
from llmcli.errors import DownloadError

TokenOpt = Annotated[Optional[str], typer.Option("--token", help="Hugging Face access token (private models). "
                                                 "[default: $HF_TOKEN]", show_default=False)]


def _count(n: int) -> str:
    """12345678 -> 12.3M: compact, like the hub's own pages."""
    for unit, div in (("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= div:
            return f"{n / div:.1f}".rstrip("0").rstrip(".") + unit
    return str(n)


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        _out("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])


@models_app.command("search")
def search(
    query: Annotated[str, typer.Argument(help="Text the model's OWNER/REPO name contains (case-insensitive).",
                                         show_default=False)],
    gguf: Annotated[bool, typer.Option("--gguf", help="Only repositories with GGUF files (for llama.cpp).")] = False,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=1000, help="How many models to show (1-1000).")]
    = 20,
    json_out: Annotated[bool, typer.Option("--json", help="A JSON array on stdout, one object per model.")] = False,
    token: TokenOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Search the Hugging Face hub for text-generation models, most downloaded first: name, downloads,
    likes, formats (gguf, safetensors) and the GGUF quants in the file names.

    Pull one with `llmcli pull OWNER/REPO:QUANT`. HF_ENDPOINT, HF_TOKEN and HF_HUB_OFFLINE are respected."""
    from llmcli.store import hubquery

    _hf_logs(verbose)
    hits = hubquery.search(query, gguf_only=gguf, limit=limit, token=token)
    if json_out:
        _out(_dumps([h.to_json() for h in hits]))
        return
    if not hits:
        _info(f"no text-generation models{' with GGUF files' if gguf else ''} match {query!r} on the hub")
        return
    rows = [("NAME", "DOWNLOADS", "LIKES", "FORMATS", "QUANTS")]
    for h in hits:
        quants = ", ".join(h.quants[:6]) + (f" +{len(h.quants) - 6}" if len(h.quants) > 6 else "")
        rows.append((h.repo_id + (" (gated)" if h.gated else ""), _count(h.downloads), _count(h.likes),
                     ",".join(h.formats) or "-", quants or "-"))
    _table(rows)


@models_app.command("outdated")
def outdated(
    json_out: Annotated[bool, typer.Option("--json", help="A JSON array on stdout: the outdated models.")] = False,
    token: TokenOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Pulled models whose hub revision has moved to a newer commit since they were pulled.

    Exit 0 whether or not some are outdated (as `pip list --outdated`); exit 1 when a model could not be
    checked. Update one with `llmcli pull NAME --update`. Imported models and models pulled at a commit
    sha are never outdated."""
    _hf_logs(verbose)
    checked = _store().outdated(token=token)
    failed = [s for s in checked if s.error is not None]
    if checked and len(failed) == len(checked):
        raise failed[0].error  # nothing could be checked: the one cause, not a warning per model
    moved = [s for s in checked if s.moved]
    if json_out:
        _out(_dumps([{"name": s.record.name, "repo": s.record.repo, "revision": s.record.revision,
                      "pinned": s.record.commit, "current": s.current} for s in moved]))
    elif moved:
        rows = [("NAME", "REPO", "REVISION", "PINNED → CURRENT")]
        rows += [(s.record.name, s.record.repo, s.record.revision, f"{s.record.commit[:12]} → {s.current[:12]}")
                 for s in moved]
        _table(rows)
    for s in failed:
        _info(f"warning: cannot check {s.record.name}: {s.error.message}")
    if failed:
        raise DownloadError(f"could not check {len(failed)} of {len(checked)} pulled model(s)",
                            "see the warnings above")
    if not json_out:
        if not checked:
            _info("no pulled models to check (imported models have no hub revision)")
        elif moved:
            _info(f"{len(moved)} of {len(checked)} pulled model(s) outdated: `llmcli pull NAME --update`")
        else:
            _info(f"all {len(checked)} pulled model(s) are up to date")
