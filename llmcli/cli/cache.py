"""``llmcli cache``: the GGUF → HF conversions the torch backend keeps in the cache dir."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

# -v only shows tracebacks here (cli/app.py reads it from argv); every command accepts it.
VerboseOpt = Annotated[bool, typer.Option("-v", "--verbose", help="Show tracebacks.")]

cache_app = typer.Typer(help="List or remove cached conversions (GGUF files converted for the torch backend).",
                        no_args_is_help=True)


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


@cache_app.command("list")
def list_(
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
    verbose: VerboseOpt = False,
) -> None:
    """List cached conversions with their size, source GGUF and whether they are stale."""
    from llmcli.backends.gguf_convert import converted_root, list_conversions
    from llmcli.config import cache_dir
    from llmcli.output import dumps, info

    root = cache_dir()
    items = list_conversions(root)
    if json_out:
        sys.stdout.write(dumps([{"path": str(c.path), "source": c.source, "size_bytes": c.size_bytes,
                                 "status": c.status, "converted_at": c.manifest.get("converted_at")}
                                for c in items]) + "\n")
        return
    if not items:
        info(f"no conversions in {converted_root(root)}")
        return
    for c in items:
        sys.stdout.write(f"{c.path.name}\t{_mib(c.size_bytes)}\t{c.status}\t{c.source or '?'}\n")
    total = sum(c.size_bytes for c in items)
    stale = sum(1 for c in items if c.stale)
    info(f"{len(items)} conversion(s), {_mib(total)} in {converted_root(root)}; {stale} stale "
         "(remove with `llmcli cache clear`)")


@cache_app.command("clear")
def clear(
    all_: Annotated[bool, typer.Option("--all", "-a", help="Remove every conversion, not only stale ones.")] = False,
    verbose: VerboseOpt = False,
) -> None:
    """Remove stale conversions (source GGUF gone or changed, older format, unfinished); --all removes all."""
    from llmcli.backends.gguf_convert import remove_conversions
    from llmcli.config import cache_dir
    from llmcli.output import info

    removed = remove_conversions(cache_dir(), everything=all_)
    freed = sum(c.size_bytes for c in removed)
    for c in removed:
        info(f"removed {c.path.name} ({c.status})")
    info(f"removed {len(removed)} conversion(s), freed {_mib(freed)}")


def register(app: typer.Typer) -> None:
    app.add_typer(cache_app, name="cache")
