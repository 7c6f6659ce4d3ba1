"""``llmcli logs …``: read, search and prune the run log (llmcli/logs.py; docs/logs.md)."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from llmcli.errors import UsageError

logs_app = typer.Typer(
    name="logs",
    help="The run log: every generate sample and chat turn, with prompt, parameters and output. "
    "Without a subcommand: the most recent runs. See docs/logs.md.",
    invoke_without_command=True,
)

LimitOpt = Annotated[int, typer.Option("--limit", "-l", help="How many runs to show (newest last).", min=1,
                                       max=1_000_000)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the runs as a JSON array with every stored field.")]


def _first_words(text: str | None, width: int) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _print_runs(rows: list[dict], as_json: bool) -> None:
    from llmcli.output import dumps, info

    if as_json:
        sys.stdout.write(dumps(rows) + "\n")
        return
    if not rows:
        from llmcli.logs import db_path

        info(f"no runs logged yet ({db_path()})")
        return
    for r in rows:
        tokens = "-" if r["completion_tokens"] is None else f"{r['prompt_tokens']}+{r['completion_tokens']}"
        answer = f"error: {r['error']}" if r["error"] else r["output"]
        sys.stdout.write(f"{r['id']:>5}  {r['time'][:19].replace('T', ' ')}  {r['command']:<8}  "
                         f"{_first_words(r['model'], 28):<28}  {tokens:>9}  {_first_words(r['prompt'], 32):<32}  "
                         f"→ {_first_words(answer, 40)}\n")


@logs_app.callback()
def logs_list(ctx: typer.Context, limit: LimitOpt = 20, json_out: JsonOpt = False) -> None:
    """Recent runs: id, time (UTC), command, model, prompt+completion tokens, first words of prompt and answer."""
    if ctx.invoked_subcommand is not None:
        return
    from llmcli import logs

    _print_runs(logs.recent(limit), json_out)


@logs_app.command("search")
def logs_search(
    text: Annotated[str, typer.Argument(help="Words to find in prompts and answers (all of them, any order).")],
    limit: LimitOpt = 20,
    json_out: JsonOpt = False,
) -> None:
    """Full-text search over prompts and answers (SQLite FTS5; a substring match without FTS5)."""
    from llmcli import logs

    if not text.strip():
        raise UsageError("empty search text", 'llmcli logs search "words"')
    _print_runs(logs.search(text, limit), json_out)


@logs_app.command("show")
def logs_show(
    run_id: Annotated[int, typer.Argument(metavar="ID", help="The run's id, as `llmcli logs` lists it.")],
    json_out: JsonOpt = False,
) -> None:
    """One run: prompt, files, parameters, seed, model and sha256, backend, tokens, timings, output."""
    from llmcli import logs
    from llmcli.errors import LlmcliError
    from llmcli.output import dumps

    row = logs.get(run_id)
    if row is None:
        raise LlmcliError(f"no run with id {run_id} in the run log", "see `llmcli logs`")
    if json_out:
        sys.stdout.write(dumps(row) + "\n")
        return
    for key in ("id", "time", "command", "conversation", "sample", "model", "model_sha256", "backend", "seed",
                "finish_reason", "error", "prompt_tokens", "completion_tokens"):
        if row[key] is not None:
            sys.stdout.write(f"{key}: {row[key]}\n")
    if row["params"]:
        sys.stdout.write("params: " + ", ".join(f"{k}={v}" for k, v in row["params"].items()) + "\n")
    if row["timings"]:
        sys.stdout.write("timings: " + ", ".join(f"{k}={v}" for k, v in row["timings"].items()) + "\n")
    for f in row["files"] or []:
        sys.stdout.write(f"file: {f.get('name')} sha256={f.get('sha256')}\n")
    for key in ("system", "prompt", "thinking", "output"):
        if row[key]:
            sys.stdout.write(f"--- {key}\n{row[key]}\n")


@logs_app.command("rm")
def logs_rm(
    ids: Annotated[Optional[list[int]], typer.Argument(metavar="[ID]...", help="Ids of the runs to delete.",
                                                       show_default=False)] = None,
    before: Annotated[Optional[str], typer.Option("--before", help="Delete every run older than this date "
                                                  "(YYYY-MM-DD or YYYY-MM-DDTHH:MM, UTC).",
                                                  show_default=False)] = None,
) -> None:
    """Delete runs by id, or all runs before a date."""
    from llmcli import logs
    from llmcli.output import info

    if bool(ids) == (before is not None):
        raise UsageError("give run ids or --before DATE (one of them)", "llmcli logs rm 12 13, or --before 2026-01-01")
    cutoff = logs.parse_before(before) if before is not None else None
    n = logs.remove(ids=list(ids or []), before=cutoff)
    info(f"deleted {n} run{'' if n == 1 else 's'}")


def register(app: typer.Typer) -> None:
    app.add_typer(logs_app, name="logs")
