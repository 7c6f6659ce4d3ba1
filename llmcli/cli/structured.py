"""``--json-schema`` and ``--grammar``: the flag's file or inline JSON becomes one ``Constraint`` here,
at the boundary; backends receive it inside ``SamplingParams`` and never read files."""

from __future__ import annotations

import json
import os

from llmcli.backends.base import Constraint
from llmcli.errors import UsageError

_JSON_TYPES = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean",
               type(None): "null"}
MAX_BYTES = 1 << 20  # a schema or grammar is text a person wrote: 1 MiB is far beyond any real one


def read_constraint(json_schema: str | None, grammar: str | None) -> Constraint | None:
    """The typed values of --json-schema / --grammar (None when not given) as a Constraint."""
    if json_schema is not None and grammar is not None:
        raise UsageError("--json-schema and --grammar cannot be combined", "give one of them")
    if json_schema is not None:
        inline = json_schema.lstrip().startswith(("{", "["))  # JSON text; a file name never starts so
        text, source = (json_schema, "inline") if inline else (_read("--json-schema", json_schema), json_schema)
        return Constraint("json_schema", _schema_text(text, source), source)
    if grammar is not None:
        text = _read("--grammar", grammar)
        if not text.strip():
            raise UsageError(f"the --grammar file {grammar} is empty", "write GBNF rules, starting with root ::= …")
        return Constraint("gbnf", text, grammar)
    return None


def _read(flag: str, path: str) -> str:
    full = os.path.expanduser(path)
    try:
        with open(full, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except IsADirectoryError:
        raise UsageError(f"{flag} {path} is a folder, not a file") from None
    except FileNotFoundError:
        hint = "give the schema inline as {...} or a file path" if flag == "--json-schema" else "check the path"
        raise UsageError(f"{flag} file not found: {path}", hint) from None
    except OSError as e:
        raise UsageError(f"cannot read the {flag} file {path}: {e.strerror or e}") from None
    if len(data) > MAX_BYTES:
        raise UsageError(f"the {flag} file {path} is larger than 1 MiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"the {flag} file {path} is not UTF-8 text (byte {e.start})") from None


def _schema_text(text: str, source: str) -> str:
    """The schema as compact JSON (key order kept: it is the order the model writes the keys in)."""
    where = "inline" if source == "inline" else source
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"invalid --json-schema ({where}): not JSON: {e.msg} at line {e.lineno} column {e.colno}",
                         "write a JSON object such as {\"type\": \"object\", …}") from None
    except RecursionError:
        raise UsageError(f"invalid --json-schema ({where}): nested too deeply") from None
    if not isinstance(schema, dict):
        raise UsageError(f"invalid --json-schema ({where}): a schema is a JSON object, not {_JSON_TYPES.get(type(schema), 'that')}",
                         "write {\"type\": \"object\", …}")
    return json.dumps(schema, separators=(",", ":"), ensure_ascii=False)
