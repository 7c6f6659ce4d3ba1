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
                                                       help="core, torch, chat, remote or gpu (default: core; "
                                                       "remote needs -m URL). Repeatable. gpu: the prepared GPU "
                                                       "check (GPU tests and benchmark on random-weight models; "
                                                       "no model needed; docs/performance.md).")
                     ] = None,
    model: o.ModelOpt = None,
    threads: o.ThreadsOpt = None,
    repeats: Annotated[Optional[int], typer.Option("--repeats", help="Interleaved repetitions per measurement "
                                                   "(median). [default: 5; gpu: 3, --quick 2]",
                                                   show_default=False)] = None,
    quick: Annotated[bool, typer.Option("--quick", help="gpu suite: the 135M and 1B models only, shorter runs "
                                        "(the 8B model is skipped).")] = False,
    verbose: o.VerboseOpt = False,
) -> None:
    """Benchmark llmcli against llama-cpp-python / transformers on the same model.

    Prints a Markdown table (stdout) with medians and ratios; progress goes to stderr.
    `--suite gpu` exits non-zero when a GPU test fails.
    """
    from llmcli.bench import MODEL_FREE, SUITES
    from llmcli.bench.table import render_markdown
    from llmcli.config import load_settings
    from llmcli.output import info, warn
    from llmcli.store.resolve import resolve

    names = suite or ["core"]
    for name in names:
        if name not in SUITES:
            raise UsageError(f"unknown suite {name!r}", f"choose from {', '.join(SUITES)}")
    if repeats is not None and repeats < 1:
        raise UsageError("--repeats must be >= 1")
    if quick and "gpu" not in names:
        raise UsageError("--quick applies to --suite gpu only", "add --suite gpu, or drop --quick")
    model_free = [n for n in names if n in MODEL_FREE]
    names = [n for n in names if n not in MODEL_FREE]
    if model_free and not names:
        if model is not None:
            raise UsageError("--suite gpu needs no model: it builds random-weight models from configs",
                             "drop -m, or add a suite that takes a model (core, torch, chat)")
        return _model_free(model_free, quick, repeats)
    repeats = repeats or 5
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
    if model_free:
        _model_free(model_free, quick, repeats)


def _model_free(names: list[str], quick: bool, repeats: int | None) -> None:
    for name in names:
        table = importlib.import_module("llmcli.bench." + name).run_check(quick=quick, repeats=repeats)
        sys.stdout.write(table + "\n\n")
        sys.stdout.flush()


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
