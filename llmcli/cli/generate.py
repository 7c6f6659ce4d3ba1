"""``llmcli generate``: one-shot generation for shells and scripts."""

from __future__ import annotations

import random
import sys
from typing import Annotated, Optional

import typer

from llmcli import params as P
from llmcli.cli import options as o
from llmcli.errors import LlmcliError, UsageError


def build_prompt(argument: str | None, stdin_text: str | None, files=()) -> str:
    """-f files, then stdin (context), then the argument (the instruction); any one alone is the
    prompt. The layout is llmcli.attachments.compose's."""
    from llmcli.attachments import compose

    return compose(files, stdin_text, argument)


def engine_prompt(engine, text: str, *, system: str | None = None, raw: bool = False,
                  reasoning: str | None = None):
    """The ``Prompt`` `generate` sends (and `tokenize --chat` shows): its ids, its messages (what a
    server gets) and its templated text (``--raw`` or no template: the text as given)."""
    from llmcli.backends.base import Message

    if raw or not engine.has_chat_template:
        if reasoning is not None:
            raise UsageError(f"--reasoning {reasoning} needs the model's chat template",
                             "drop --raw, or drop --reasoning" if raw else "drop --reasoning")
        return engine.encode(text=text)
    messages = ([Message("system", system)] if system else []) + [Message("user", text)]
    return engine.encode(messages=messages, reasoning=reasoning)


def check_window(engine, ids: list[int], files) -> None:
    """Before anything runs: the prompt must leave room in the window (never silently truncated)."""
    if len(ids) < engine.n_ctx:
        return
    if files:
        from llmcli.attachments import overflow_error

        raise overflow_error(files, len(ids), engine.n_ctx,
                             lambda t: len(engine.tokenize(t, add_special=False, parse_special=False)))
    raise UsageError(f"the prompt is {len(ids)} tokens but the context window is {engine.n_ctx} tokens",
                     "shorten the input, or raise --ctx if the model allows more")


def resolve_think_mode(value: str | None, stdout_is_tty: bool) -> str:
    """The --think mode (already parsed by the parameter table), or its default for this stdout."""
    if value is None:
        return "show" if stdout_is_tty else "stderr"
    return value


def result_record(reply, *, model: str, backend: str, index: int) -> dict:
    s = reply.stats
    record = {
        "index": index,
        "text": reply.text,
        "finish_reason": s.finish_reason,
        "model": model,
        "backend": backend,
        "seed": s.seed,
        "usage": {"prompt_tokens": s.prompt_tokens, "completion_tokens": s.generated_tokens,
                  "total_tokens": s.prompt_tokens + s.generated_tokens},
        "timings": s.to_dict(),
    }
    if reply.thinking:
        record["thinking"] = reply.thinking
        record["thinking_tokens"] = reply.thinking_tokens
    return record


@o.table_options("model", "file", "json_schema", "grammar", "resume", "parallel", *P.SAMPLING_NAMES, *P.RUNTIME_NAMES)
def generate(
    prompt: Annotated[Optional[str], typer.Argument(help="The prompt. With piped stdin, stdin comes first as "
                                                    "context and this is the instruction.", show_default=False)] = None,
    system: Annotated[Optional[str], typer.Option("--system", "-s", help="System prompt (chat template only).",
                                                  show_default=False)] = None,
    raw: Annotated[bool, typer.Option("--raw", help="Send the text as is, without the chat template "
                                      "(tokenized like `tokenize`: BOS if the model wants one, special-token text "
                                      "parsed).")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object (an array when --n > 1) with "
                                           "text, finish_reason, usage and timings.", rich_help_panel=o.OUTPUT_PANEL)] = False,
    jsonl: Annotated[bool, typer.Option("--jsonl", help="Print one JSON object per sample, one per line, as each "
                                        "finishes.", rich_help_panel=o.OUTPUT_PANEL)] = False,
    stats: Annotated[bool, typer.Option("--stats", help="Print token counts, speeds and time to first token to "
                                        "stderr.", rich_help_panel=o.OUTPUT_PANEL)] = False,
    each_line: Annotated[bool, typer.Option("--each-line", help="Batch mode: every stdin line is one prompt (the "
                                            "argument, if any, follows it as the instruction); one JSONL record per "
                                            "sample, with its line number; exit 1 if a line failed.",
                                            rich_help_panel=o.INPUT_PANEL)] = False,
    allow_pickle: o.AllowPickleOpt = False,
    trust_remote_code: o.TrustRemoteCodeOpt = False,
    compile_: o.CompileOpt = False,
    no_log: o.NoLogOpt = False,
    verbose: o.VerboseOpt = False,
    flags: dict | None = None,
) -> None:
    """Generate text from a prompt and stream it to stdout.

    Examples:

      llmcli generate "Why is the sky blue?"

      git diff | llmcli generate "Write a commit message"

      llmcli generate -f report.md -f data.csv "Summarize the report using the data"

      llmcli generate --reasoning off --reasoning-budget 256 "…"

      llmcli generate --temperature 0 --max-tokens 64 --stop "\\n\\n" "…"

      llmcli generate --n 3 --seed 7 --jsonl "Name a colour"

      llmcli generate --json-schema person.json "Extract the person from: …"
    """
    from llmcli.backends.core import preflight
    from llmcli.cli import batch
    from llmcli.cli.runlog import PendingLog
    from llmcli.cli.structured import read_constraint
    from llmcli.logs import file_entry
    from llmcli.config import load_settings
    from llmcli.output import NullSink, TextSink, dumps, format_stats, info
    from llmcli.streaming import run_stream, think_filter_for

    if json_out and jsonl:
        raise UsageError("--json and --jsonl cannot be combined")
    if each_line and json_out:
        raise UsageError("--each-line writes one JSON record per line (JSONL): --json cannot be combined",
                         "drop --json")
    settings = load_settings()
    # Every value is parsed and range-checked here, before stdin is read or a model is loaded.
    given = o.parse_flags(flags)
    params = o.sampling_params(settings, **{n: given[n] for n in P.SAMPLING_NAMES})
    params = params.replace(constraint=read_constraint(given["json_schema"], given["grammar"]))
    think_mode = resolve_think_mode(o.setting(settings, given, "think"), _isatty(sys.stdout))
    opts = o.backend_options(settings, given, verbose=verbose, allow_pickle=allow_pickle,
                             trust_remote_code=trust_remote_code, compile=compile_)
    parallel = given["parallel"] or 1
    resume = batch.check_args(each_line, given["resume"], given["file"] or (), params, parallel)
    files, stdin_text = o.read_inputs(given["file"] or (), stdin=not each_line)
    text = None if each_line else build_prompt(prompt, stdin_text, files)
    log = PendingLog("generate", settings, no_log=no_log, prompt=text, system=system, params=params,
                     model=given["model"])
    log.files = [file_entry(f.name, f.text.encode()) for f in files]
    try:
        ref, engine = o.load_model(given["model"], settings, opts)
    except LlmcliError as e:
        log.failed(e)
        log.flush()
        raise
    log.loaded(ref, engine)
    try:
        if not raw and not engine.has_chat_template and verbose:
            info("the model has no chat template: sending the prompt as is")
        preflight(engine, params)
        if each_line:
            def make_prompt(line: str):
                p = engine_prompt(engine, build_prompt(prompt, line, files), system=system, raw=raw,
                                  reasoning=params.reasoning)
                check_window(engine, list(p.ids), files)
                return p

            batch.check_parallel(engine, parallel)
            batch.run(engine, ref, params, make_prompt=make_prompt, resume=resume, log=log, parallel=parallel)
            return
        prompt_obj = engine_prompt(engine, text, system=system, raw=raw, reasoning=params.reasoning)
        prompt_text = prompt_obj.text if prompt_obj.messages else None
        check_window(engine, list(prompt_obj.ids), files)
        base_seed = params.seed if params.seed is not None else random.randrange(2**31)
        records = []
        samples = [params.replace(seed=base_seed + i, n=1) for i in range(params.n)]
        sources = batch.sample_sources(engine, prompt_obj, samples)
        for i, sample_params in enumerate(samples):
            sink = NullSink() if (json_out or jsonl) else TextSink(think_mode)
            if i and not (json_out or jsonl):
                sys.stdout.write("\n")
            reply = run_stream(sources[i], prompt_obj, sample_params, sink, think_filter_for(prompt_text))
            if not (json_out or jsonl) and (reply.error is None or sink.wrote_any):
                sink.end()
            if stats or verbose:
                info(format_stats(reply.stats, label=f"sample {i + 1}/{params.n}" if params.n > 1 else ""))
            record = result_record(reply, model=ref.display, backend=engine.name, index=i)
            log.reply(reply, sample=i)
            if jsonl:
                sys.stdout.write(dumps(record) + "\n")
                sys.stdout.flush()
            records.append(record)
            if reply.interrupted or reply.error is not None:
                # What was generated stays: the record (finish_reason "interrupted" | "error"), then exit.
                if json_out:
                    sys.stdout.write(dumps(records[0] if params.n == 1 else records) + "\n")
                sys.stdout.flush()
                if reply.error is not None:
                    raise reply.error
                raise typer.Exit(130)
        if json_out:
            sys.stdout.write(dumps(records[0] if params.n == 1 else records) + "\n")
            sys.stdout.flush()
    except LlmcliError as e:
        log.failed(e)
        raise
    finally:
        engine.close()
        log.flush()  # after the answer is printed; never raises


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def register(app: typer.Typer) -> None:
    app.command("generate", no_args_is_help=False)(generate)
