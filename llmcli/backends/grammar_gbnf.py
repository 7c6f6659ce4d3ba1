"""JSON schema → GBNF for llama.cpp's native grammar sampler.

The conversion is llama-cpp-python's (``llama_cpp.llama_grammar``, a port of llama.cpp's
``json_schema_to_grammar``). That converter silently drops keywords it does not implement —
a schema would then be enforced only in part. So every schema is walked first and any keyword
outside ``SUPPORTED`` is refused with the JSON pointer of where it is; and integer bounds
(``minimum``/``maximum``, which the bundled converter ignores) are enforced by a digit-range
rule built here.
"""

from __future__ import annotations

import json
import math

from llmcli.errors import UsageError

# Keywords that only annotate: the converter may ignore them without weakening the schema.
ANNOTATIONS = frozenset({"$schema", "$id", "$comment", "title", "description", "default", "examples",
                         "deprecated", "readOnly", "writeOnly", "$defs", "definitions"})
SUPPORTED = ANNOTATIONS | frozenset({
    "type", "properties", "required", "additionalProperties", "items", "minItems", "maxItems",
    "enum", "const", "anyOf", "$ref", "minLength", "maxLength", "pattern", "format",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"})
FORMATS = frozenset({"date", "time", "date-time", "uuid"})
TYPES = frozenset({"string", "integer", "number", "boolean", "null", "object", "array"})
JSON_CHAR = r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])'
INT_DIGITS = 15  # an integer bounded on one side only is kept to this many digits


def unsupported(what: str, where: str, hint: str | None = None, who: str = "the llama.cpp backend") -> UsageError:
    return UsageError(f"{who} cannot enforce {what} in --json-schema (at {where or '/'})",
                      hint or "remove it from the schema (docs/usage.md lists what each backend enforces)")


def check_schema(schema, where: str = "", who: str = "the llama.cpp backend") -> None:
    """Refuse what the converter would not enforce, naming the place (a JSON pointer). ``who`` names
    the converter's user in errors (llama-server's converter skips the same keywords)."""
    if schema is True or schema == {}:
        return
    if not isinstance(schema, dict):
        raise UsageError(f"invalid --json-schema: {where or '/'} must be an object or true",
                         "see https://json-schema.org")
    for key in schema:
        if key not in SUPPORTED:
            raise unsupported(f"the keyword {key!r}", where, who=who)
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if kind is not None else []
    for k in kinds:
        if k not in TYPES:
            raise UsageError(f"invalid --json-schema: unknown type {k!r} at {where or '/'}",
                             "types are " + ", ".join(sorted(TYPES)))
    bounds = [k for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum") if k in schema]
    if bounds and kinds != ["integer"]:
        raise unsupported(f"{bounds[0]!r} on a non-integer", where, "bounds are enforced for integers only", who=who)
    for k in bounds:
        if isinstance(schema[k], bool) or not isinstance(schema[k], (int, float)):
            raise UsageError(f"invalid --json-schema: {k} must be a number (at {where or '/'})")
    if "format" in schema and schema["format"] not in FORMATS:
        raise unsupported(f"the format {schema['format']!r}", where, "formats: " + ", ".join(sorted(FORMATS)), who=who)
    pattern = schema.get("pattern")
    if pattern is not None and not (isinstance(pattern, str) and len(pattern) >= 2 and pattern[0] == "^"
                                    and pattern[-1] == "$" and "(?" not in pattern.replace("(?:", "")):
        # llama-server's converter would accept any string for such a pattern, with a log warning only.
        raise unsupported(f"the pattern {pattern!r}", where, "anchor it as ^…$ and use no lookaround or named "
                          "group", who=who)
    if "pattern" in schema and ({"minLength", "maxLength", "format"} & schema.keys()):
        raise unsupported("'pattern' together with a length or format", where, who=who)
    if "items" in schema and not isinstance(schema["items"], dict):
        raise unsupported("'items' as a list", where, "use a single schema for items", who=who)
    if isinstance(schema.get("items"), dict) and schema.get("maxItems") is not None and \
            schema.get("maxItems", 0) < schema.get("minItems", 0):
        raise UsageError(f"invalid --json-schema: maxItems < minItems (at {where or '/'})")
    if "anyOf" in schema and (schema.keys() - ANNOTATIONS - {"anyOf"}):
        raise unsupported("'anyOf' beside other keywords", where, who=who)
    ap = schema.get("additionalProperties")
    if ap not in (None, False):
        check_schema(ap, f"{where}/additionalProperties", who)
    for name, sub in (schema.get("properties") or {}).items():
        check_schema(sub, f"{where}/properties/{name}", who)
    if isinstance(schema.get("items"), dict):
        check_schema(schema["items"], f"{where}/items", who)
    for i, sub in enumerate(schema.get("anyOf") or []):
        check_schema(sub, f"{where}/anyOf/{i}", who)
    for group in ("$defs", "definitions"):
        for name, sub in (schema.get(group) or {}).items():
            check_schema(sub, f"{where}/{group}/{name}", who)
    ref = schema.get("$ref")
    if ref is not None and not (isinstance(ref, str) and ref.startswith("#/")):
        raise unsupported(f"the reference {ref!r}", where, "only references inside the schema (#/...) work", who=who)


# --- integer ranges ---------------------------------------------------------------------------------

def _same_length(lo: str, hi: str) -> list[str]:
    """GBNF alternatives matching exactly the decimal strings between lo and hi (same length)."""
    if not lo:
        return [""]
    if lo == hi:
        return [f'"{lo}"']
    a, b = int(lo[0]), int(hi[0])
    rest = len(lo) - 1
    any_rest = " [0-9]" * rest
    if lo[1:] == "0" * rest and hi[1:] == "9" * rest:
        return [f"[{a}-{b}]{any_rest}"]
    if a == b:
        return [f'"{lo[0]}" ' + alt for alt in _same_length(lo[1:], hi[1:])]
    out = [f'"{lo[0]}" ' + alt for alt in _same_length(lo[1:], "9" * rest)]
    if a + 1 <= b - 1:
        out.append(f"[{a + 1}-{b - 1}]{any_rest}")
    out += [f'"{hi[0]}" ' + alt for alt in _same_length("0" * rest, hi[1:])]
    return out


def digits_between(lo: int, hi: int) -> list[str]:
    """GBNF alternatives for the non-negative integers lo..hi, written without leading zeros."""
    out: list[str] = []
    for width in range(len(str(lo)), len(str(hi)) + 1):
        first = max(lo, 10 ** (width - 1) if width > 1 else 0)
        last = min(hi, 10 ** width - 1)
        if first <= last:
            out += _same_length(str(first), str(last))
    return out


def integer_rule(schema: dict) -> str:
    """A GBNF rule body for an integer inside the schema's bounds."""
    cap = 10 ** INT_DIGITS - 1
    lo = math.ceil(schema.get("minimum", -cap))
    hi = math.floor(schema.get("maximum", cap))
    if "exclusiveMinimum" in schema:
        lo = max(lo, math.floor(schema["exclusiveMinimum"]) + 1)
    if "exclusiveMaximum" in schema:
        hi = min(hi, math.ceil(schema["exclusiveMaximum"]) - 1)
    if lo > hi:
        raise UsageError(f"invalid --json-schema: no integer lies between {lo} and {hi}")
    alts: list[str] = []
    if lo < 0:
        alts += [f'"-" {a}' for a in digits_between(max(1, -min(hi, -1)), -lo)]
    if hi >= 0:
        alts += digits_between(max(lo, 0), hi)
    return "(" + " | ".join(f"({a})" for a in alts) + ") space"


def to_gbnf(schema_text: str) -> str:
    """The GBNF grammar for a JSON schema, after ``check_schema``."""
    from llama_cpp import llama_grammar

    schema = json.loads(schema_text)
    check_schema(schema)

    class Converter(llama_grammar.SchemaConverter):
        def _add_rule(self, name, rule):
            if name == "char":  # the bundled rule lets raw control characters into strings: not JSON
                rule = JSON_CHAR
            return super()._add_rule(name, rule)

        def visit(self, node, name):
            if isinstance(node, dict) and node.get("type") == "integer" and "enum" not in node \
                    and "const" not in node:
                rule = name + "-" if name in llama_grammar.RESERVED_NAMES else name or "root"
                return self._add_rule(rule, integer_rule(node))
            return super().visit(node, name)

    converter = Converter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
    try:
        schema = converter.resolve_refs(schema, "input")
        converter.visit(schema, "")
    except (AssertionError, ValueError, KeyError, TypeError, RecursionError) as e:
        raise UsageError(f"the llama.cpp backend cannot convert --json-schema to a grammar: {e}",
                         "simplify the schema, or use --backend torch (llguidance)") from None
    return converter.format_grammar()
