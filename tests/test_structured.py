"""Structured output (issue 12): --json-schema and --grammar on both local backends.

Every sampled output must parse and validate with jsonschema. The issue's full 20 prompts × 20
seeds per backend is tests/bench_structured.py (minutes on 2 cores); here a few prompts × seeds
at temperature 0.7 keep the file to about a minute."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest

from llmcli.backends.base import Constraint, Message, SamplingParams
from llmcli.backends.grammar_gbnf import integer_rule
from llmcli.cli.structured import read_constraint

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 30},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "colour": {"enum": ["red", "green", "blue"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 3},
    },
    "required": ["name", "age", "colour", "tags"],
    "additionalProperties": False,
}
PROMPTS = ["Describe a person called Ann as JSON.", "Invent a pirate and give their details.",
           "Extract the person from: Bob, 41, likes green, tags sailing and chess."]
SEEDS = (1, 2, 3)
LIST_GBNF = 'root ::= item (", " item)*\nitem ::= [a-z]+\n'
LIST_RE = re.compile(r"^[a-z]+(, [a-z]+)*$")


@pytest.fixture(scope="module")
def backends(gguf_path, hf_model_dir):
    """Both local backends on one thread each: on a loaded 2-core machine two spinning threads per
    backend cost far more than they give (measured: 20× slower for torch)."""
    from llmcli.backends.llamacpp import LlamaCppBackend
    from llmcli.backends.select import BackendOptions
    from llmcli.backends.torch import TorchBackend
    from llmcli.store.refs import ModelRef

    made = {"llama.cpp": LlamaCppBackend(gguf_path, ctx_cap=1024, threads=1),
            "torch": TorchBackend(ModelRef(hf_model_dir, "hf"), BackendOptions(ctx=1024, threads=1), reason="test")}
    yield made
    for b in made.values():
        b.close()


def schema_constraint(schema: dict) -> Constraint:
    return read_constraint(json.dumps(schema), None)


def generate(backend, prompt: str, params: SamplingParams) -> str:
    *_, finish = backend.stream(backend.encode(messages=[Message("user", prompt)]), params)
    return finish.text, finish.stats.finish_reason


@pytest.mark.parametrize("which", ["llama.cpp", "torch"])
def test_sampled_outputs_validate_against_the_schema(which, backends):
    backend = backends[which]
    constraint = schema_constraint(PERSON)
    for prompt in PROMPTS:
        for seed in SEEDS:
            params = SamplingParams(temperature=0.7, seed=seed, max_tokens=256, constraint=constraint)
            text, reason = generate(backend, prompt, params)
            assert reason == "stop", (prompt, seed, text)
            jsonschema.validate(json.loads(text), PERSON)


@pytest.mark.parametrize("which", ["llama.cpp", "torch"])
def test_gbnf_comma_separated_list(which, backends):
    backend = backends[which]
    params = SamplingParams(temperature=0.7, seed=5, max_tokens=24, constraint=Constraint("gbnf", LIST_GBNF))
    text, _ = generate(backend, "List some fruits.", params)
    # Cut by max_tokens the text may end inside a word or after ", ": every complete part still matches.
    assert LIST_RE.match(text.removesuffix(", ").removesuffix(",")), text
    unconstrained, _ = generate(backend, "List some fruits.", params.replace(constraint=None))
    assert not LIST_RE.match(unconstrained)  # the grammar, not the prompt, made it a list


def bounded(rule: str) -> re.Pattern:
    """The GBNF alternatives of ``integer_rule`` as a Python regex (they use only literals and classes)."""
    body = re.sub(r'"([^"]*)"', lambda m: re.escape(m.group(1)), rule.removesuffix(" space"))
    return re.compile("^" + body.replace(" ", "") + "$")


@pytest.mark.parametrize("lo,hi", [(0, 120), (-5, 7), (-130, -7), (3, 3), (17, 4523), (-99, 0)])
def test_integer_bounds_grammar_matches_exactly_the_range(lo, hi):
    rx = bounded(integer_rule({"minimum": lo, "maximum": hi}))
    for v in range(lo - 300, hi + 300):
        assert bool(rx.match(str(v))) == (lo <= v <= hi), v
    assert not rx.match("007") and not rx.match("-0")


def test_exclusive_and_fractional_bounds_round_inwards():
    rx = bounded(integer_rule({"exclusiveMinimum": 0.5, "exclusiveMaximum": 10}))
    assert [v for v in range(-3, 14) if rx.match(str(v))] == list(range(1, 10))


def test_json_flag_wraps_the_constrained_text(cli, gguf_path, bad):
    schema = bad.work / "person.json"
    schema.write_text(json.dumps(PERSON))
    r = cli("generate", "-m", str(gguf_path), "--threads", "1", "--json-schema", str(schema), "--seed", "4", "-t", "0.7", "--json",
            "--max-tokens", "256", PROMPTS[0], check=True)
    record = json.loads(r.stdout)
    jsonschema.validate(json.loads(record["text"]), PERSON)


def test_chat_constrains_every_reply(cli, gguf_path):
    schema = json.dumps({"type": "object", "properties": {"answer": {"enum": ["yes", "no"]}},
                         "required": ["answer"], "additionalProperties": False})
    r = cli("chat", "-m", str(gguf_path), "--threads", "1", "--no-save", "--no-log", "--json-schema", schema, "-t", "0.7",
            "--seed", "1", input="Is the sky blue?\nIs fire cold?\n", check=True)
    replies = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    assert len(replies) == 2 and all(x["answer"] in ("yes", "no") for x in replies), r.stdout


# --- bad input: one clean error line, before anything is generated -----------------------------------

@pytest.mark.parametrize("args,message", [
    (("--json-schema", '{"type":'), "not JSON"),
    (("--json-schema", "[1, 2]"), "not an array"),
    (("--json-schema", "missing.json"), "not found"),
    (("--json-schema", "{}", "--grammar", "list.gbnf"), "cannot be combined"),
    (("--grammar", "empty.gbnf"), "is empty"),
    (("--grammar", "broken.gbnf"), "Undefined rule identifier 'fruit'"),
    (("--json-schema", '{"type":"array","items":{"type":"string"},"uniqueItems":true}'), "'uniqueItems'"),
    (("--json-schema", '{"type":"number","minimum":0}'), "'minimum' on a non-integer"),
    (("--json-schema", '{"type":"string","format":"email"}'), "format 'email'"),
    (("--json-schema", '{"type":"strin"}'), "unknown type"),
])
def test_llamacpp_refuses_bad_or_unenforceable_constraints(bad, gguf_path, args, message):
    (bad.work / "list.gbnf").write_text(LIST_GBNF)
    (bad.work / "empty.gbnf").write_text("\n")
    (bad.work / "broken.gbnf").write_text("root ::= fruit (\", \" fruit)*\n")
    bad.run("generate", "-m", str(gguf_path), *args, "hello", expect=2, message=message)


@pytest.mark.parametrize("args,message", [
    (("--json-schema", '{"type":"array","uniqueItems":true}'), "uniqueItems"),
    (("--grammar", "broken.gbnf"), "'fruit' not found"),
])
def test_torch_refuses_bad_or_unenforceable_constraints(bad, hf_model_dir, args, message):
    (bad.work / "broken.gbnf").write_text("root ::= fruit (\", \" fruit)*\n")
    bad.run("generate", "-m", str(hf_model_dir), "--backend", "torch", *args, "hello", expect=2, message=message)


def test_chat_refuses_an_unenforceable_schema_before_the_first_message(bad, gguf_path):
    bad.run("chat", "-m", str(gguf_path), "--no-save", "--no-log", "--json-schema", '{"not": {"type": "string"}}',
            expect=2, message="'not'", input="hello\n")
