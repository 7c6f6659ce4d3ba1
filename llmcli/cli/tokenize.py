"""``llmcli tokenize`` and ``llmcli detokenize``: see exactly what the model sees."""

from __future__ import annotations

import json
import re
import sys
from typing import Annotated, Optional

import typer

from llmcli import params as P
from llmcli.cli import options as o
from llmcli.errors import UsageError

# Tokenizing needs the vocabulary, not a big KV cache.
TOKENIZE_CTX = 512


TOKEN_ID = P.Param("token_id", int, "A token id.", lo=0, hi=P.INT32_MAX)


def parse_ids(words: list[str]) -> list[int]:
    """Ids from arguments or stdin: spaces, commas, newlines or a JSON array of integers (JSON
    booleans and fractions are not ids: nothing is truncated)."""
    text = " ".join(words).strip()
    if text.startswith("["):
        try:
            values = json.loads(text)
        except (ValueError, RecursionError):
            raise UsageError("stdin looks like a JSON array but does not parse") from None
        if not isinstance(values, list):
            raise UsageError("the JSON value is not an array of token ids")
        ids = [TOKEN_ID.check(v, "token id") for v in values]
    else:
        ids = [TOKEN_ID.parse(w, "token id") for w in re.split(r"[\s,]+", text) if w]
    if not ids:
        raise UsageError("no token ids given", "pass ids as arguments or on stdin")
    return ids


@o.table_options("file", "reasoning", help={
    "file": "With --chat: a UTF-8 text file put before the text as context, as `generate -f` does; - reads "
            "stdin. Repeatable.",
    "reasoning": "With --chat: the reasoning switch passed to the chat template, as `generate --reasoning`."})
def tokenize(
    text: Annotated[Optional[str], typer.Argument(help="Text to tokenize (default: stdin).", show_default=False)] = None,
    model: o.ModelOpt = None,
    pieces: Annotated[bool, typer.Option("--pieces", "-p", help="Show each token's id and text piece.")] = False,
    count: Annotated[bool, typer.Option("--count", "-c", help="Print only the number of tokens.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print ids (and pieces with --pieces) as JSON.")] = False,
    no_special: Annotated[bool, typer.Option("--no-special", help="Add no BOS/EOS and treat special-token text "
                                             "such as <|im_start|> as plain text.")] = False,
    chat: Annotated[bool, typer.Option("--chat", help="Tokenize the prompt exactly as `generate` sends it through "
                                       "the chat template.")] = False,
    system: Annotated[Optional[str], typer.Option("--system", "-s", help="System prompt for --chat.",
                                                  show_default=False)] = None,
    backend: o.BackendOpt = None,
    api_key: o.ApiKeyOpt = None,
    verbose: o.VerboseOpt = False,
    flags: dict | None = None,
) -> None:
    """Show the token ids of a text.

    Default policy (the same `generate --raw` uses): a BOS token is added when the
    model asks for one, and special-token text (e.g. <|im_start|>) becomes the
    special token. --no-special turns both off.
    """
    from llmcli.cli.generate import build_prompt, engine_prompt
    from llmcli.config import load_settings

    if chat and no_special:
        raise UsageError("--chat and --no-special cannot be combined", "the chat template is made of special tokens")
    given = o.parse_flags({"model": model, "backend": backend, "api_key": api_key, **(flags or {})})
    for name, value in (("--system", system), ("--file", given.get("file")), ("--reasoning", given.get("reasoning"))):
        if value and not chat:
            raise UsageError(f"{name} only applies with --chat")
    if chat:
        # The prompt exactly as `generate` builds it: files, stdin, then the argument.
        files, stdin_text = o.read_inputs(given["file"] or ())
        text = build_prompt(text, stdin_text, files)
    elif text is None:
        text = o.read_stdin_text()
        if text is None:
            raise UsageError("no text given", "pass the text as an argument or on stdin")
    settings = load_settings()
    opts = o.backend_options(settings, given, ctx=TOKENIZE_CTX, verbose=verbose)
    _, engine = o.load_model(given["model"], settings, opts)
    try:
        if chat:
            ids = list(engine_prompt(engine, text, system=system, reasoning=given["reasoning"]).ids)
        else:
            ids = engine.tokenize(text, add_special=not no_special, parse_special=not no_special)
        out = sys.stdout
        if count:
            out.write(json.dumps({"count": len(ids)}) + "\n" if json_out else f"{len(ids)}\n")
        elif json_out:
            record = {"ids": ids, "count": len(ids)}
            if pieces:
                record["pieces"] = engine.token_pieces(ids)
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
        elif pieces:
            for i, p in zip(ids, engine.token_pieces(ids)):
                out.write(f"{i}\t{json.dumps(p, ensure_ascii=False)}\n")
        else:
            out.write(" ".join(map(str, ids)) + "\n")
        out.flush()
    finally:
        engine.close()


def detokenize(
    ids: Annotated[Optional[list[str]], typer.Argument(help="Token ids (default: stdin).", show_default=False)] = None,
    model: o.ModelOpt = None,
    no_newline: Annotated[bool, typer.Option("--no-newline", "-n", help="Do not add a final newline.")] = False,
    backend: o.BackendOpt = None,
    api_key: o.ApiKeyOpt = None,
    verbose: o.VerboseOpt = False,
) -> None:
    """Turn token ids back into text (special tokens shown as their text)."""
    from llmcli.config import load_settings

    words = ids or []
    if not words:
        stdin = o.read_stdin_text()
        if stdin is None:
            raise UsageError("no token ids given", "pass ids as arguments or on stdin")
        words = [stdin]
    token_ids = parse_ids(words)
    given = o.parse_flags({"model": model, "backend": backend, "api_key": api_key})
    settings = load_settings()
    opts = o.backend_options(settings, given, ctx=TOKENIZE_CTX, verbose=verbose)
    _, engine = o.load_model(given["model"], settings, opts)
    try:
        sys.stdout.write(engine.detokenize(token_ids) + ("" if no_newline else "\n"))
        sys.stdout.flush()
    finally:
        engine.close()


def register(app: typer.Typer) -> None:
    app.command("tokenize")(tokenize)
    app.command("detokenize")(detokenize)
