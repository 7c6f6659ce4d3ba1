"""``llmcli bench``: measure speed against the reference libraries in the same run."""

from __future__ import annotations

import importlib
import platform
import sys
from typing import Annotated, Optional

import typer

from llmcli.cli import options as o
from llmcli.errors import UsageError


def bench(
    suite: Annotated[Optional[list[str]], typer.Option("--suite", metavar="SUITE", show_default=False,
                                                       help="core, torch, chat or remote (default: core; "
                                                       "remote needs -m URL). Repeatable.")
                     ] = None,
    model: o.ModelOpt = None,
    threads: o.ThreadsOpt = None,
    repeats: Annotated[int, typer.Option("--repeats", help="Interleaved repetitions per measurement (median).")] = 5,
    verbose: o.VerboseOpt = False,
) -> None:
    """Benchmark llmcli against llama-cpp-python / transformers on the same model.

    Prints a Markdown table (stdout) with medians and ratios; progress goes to stderr.
    """
    from llmcli.bench import SUITES
    from llmcli.bench.table import render_markdown
    from llmcli.config import load_settings
    from llmcli.output import info, warn
    from llmcli.store.resolve import resolve

    names = suite or ["core"]
    for name in names:
        if name not in SUITES:
            raise UsageError(f"unknown suite {name!r}", f"choose from {', '.join(SUITES)}")
    if repeats < 1:
        raise UsageError("--repeats must be >= 1")
    given = o.parse_flags({"model": model, "threads": threads})
    settings = load_settings()
    threads = o.setting(settings, given, "threads")
    ref = resolve(given["model"], configured=settings.general.get("model"), warn=warn)
    from llmcli.backends.hardware import physical_cores

    info(f"machine: {platform.machine()} {platform.processor() or ''}, {physical_cores()} physical cores, "
         f"python {platform.python_version()}; model: {ref.display}")
    remote = ref.format == "remote"
    for name in names:
        if (name == "remote") != remote:
            raise UsageError(f"suite {name} needs " + ("-m http://HOST:PORT/v1 (a running server)" if not remote
                                                       else "a model file, not a URL"))
    for name in names:
        info(f"running suite {name} …")
        module = importlib.import_module(SUITES[name])
        rows = module.run(ref.location if remote else ref.path, threads, repeats=repeats)
        sys.stdout.write(render_markdown(rows, f"suite: {name} (model: {ref.display})") + "\n\n")
        sys.stdout.flush()


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
