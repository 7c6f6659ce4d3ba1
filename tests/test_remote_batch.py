"""Batch mode and structured output on the remote backend (issue 12): ``--each-line --parallel N``
keeps N requests in flight, ``--n`` sends its samples at once, ``--json-schema``/``--grammar`` travel
in the server's own fields. Against a real llama-server with 4 slots (it batches the requests
itself) and, for what a real engine does only by accident, the stub server of openai_stub.py."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import jsonschema
import pytest

import openai_stub
import remote_servers
from conftest import run_cli
from test_batch import comparable, corpus, records
from test_structured import LIST_GBNF, LIST_RE, PERSON, PROMPTS


@pytest.fixture(scope="module")
def slots_server(llama_tools_bins, gguf_path, server_logs):
    """llama-server with 4 slots (-np 4), each a window of 512 tokens."""
    s = remote_servers.start_llama_server(llama_tools_bins, gguf_path, server_logs, slots=4)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def stub():
    s = openai_stub.Stub()
    yield s
    s.stop()


def batch(url: str, *args: str, input: bytes | str, check: bool = False):
    return run_cli("generate", "-m", url, "--each-line", "--no-log", *args, input=input, check=check)


def test_parallel_4_on_a_server_gives_the_records_of_parallel_1(slots_server):
    """Error lines (bad UTF-8: line 13; longer than a slot's window: line 14, the server's HTTP 400)
    become error records in place; greedy texts equal one request at a time's."""
    lines = corpus().splitlines(keepends=True)
    data = b"".join(lines[:13] + [lines[28]])  # blank line 7, bad UTF-8 13, 600 words 14
    args = ("-t", "0", "--max-tokens", "8", "--stop", ".", "--seed", "11")
    one = batch(slots_server.url, *args, "--parallel", "1", input=data)
    four = batch(slots_server.url, *args, "--parallel", "4", input=data)
    assert one.returncode == four.returncode == 1, four.stderr
    recs = records(four.stdout)
    assert [r["line"] for r in recs] == [n for n in range(1, 15) if n != 7]
    errors = {r["line"]: r["error"] for r in recs if "error" in r}
    assert set(errors) == {13, 14} and "context" in errors[14], errors
    assert comparable(recs) == comparable(records(one.stdout))
    assert "11 line(s) answered, 2 failed" in four.stderr


def test_json_schema_outputs_validate(slots_server):
    r = batch(slots_server.url, "--parallel", "4", "--json-schema", json.dumps(PERSON), "-t", "0.7", "--seed", "1",
              "--max-tokens", "160", input="\n".join(PROMPTS) + "\n", check=True)
    recs = records(r.stdout)
    assert len(recs) == 3
    raw = run_cli("generate", "-m", slots_server.url, "--raw", "--json-schema", json.dumps(PERSON), "-t", "0.7",
                  "--max-tokens", "160", "--json", "A person:", check=True)
    for rec in recs + [json.loads(raw.stdout)]:  # chat (response_format) and --raw (llama.cpp's json_schema)
        assert rec["finish_reason"] == "stop", rec
        jsonschema.validate(json.loads(rec["text"]), PERSON)


@pytest.mark.parametrize("raw", [(), ("--raw",)])
def test_grammar_gives_a_comma_separated_list(slots_server, tmp_path, raw):
    (tmp_path / "list.gbnf").write_text(LIST_GBNF)
    r = run_cli("generate", "-m", slots_server.url, *raw, "--grammar", str(tmp_path / "list.gbnf"), "-t", "0.7",
                "--seed", "5", "--max-tokens", "24", "--json", "List some fruits.", check=True)
    text = json.loads(r.stdout)["text"]
    assert LIST_RE.match(text.removesuffix(", ").removesuffix(",")), text


def test_constraints_the_server_cannot_enforce_fail_before_any_line(slots_server, bad):
    (bad.work / "bad.gbnf").write_text("root ::= broken (\n")
    url = slots_server.url
    # The server's parser refuses it (HTTP 400) on llmcli's one-token check, before the first line.
    bad.run("generate", "-m", url, "--each-line", "--parallel", "4", "--grammar", "bad.gbnf", input="a\nb\n",
            expect=2, message="cannot use --grammar bad.gbnf")
    # llama-server's converter would skip these silently: llmcli refuses them first.
    for schema, what in (({"type": "array", "uniqueItems": True}, "uniqueItems"),
                         ({"type": "string", "pattern": "(?=a)b"}, "pattern")):
        bad.run("generate", "-m", url, "--json-schema", json.dumps(schema), "Hi", expect=2, message=what)


def test_stub_failed_requests_are_error_records_with_n_requests_in_flight(stub):
    stub.max_active = 0
    lines = ["one", "two", "three", "four", "five", "six FAIL400", "seven FAIL500", "eight CUT", "nine"]
    r = batch(stub.url, "--parallel", "4", input="\n".join(lines) + "\n")
    assert r.returncode == 1 and r.stderr.count("error:") == 1, r.stderr
    recs = records(r.stdout)
    assert [x["line"] for x in recs] == list(range(1, 10))
    assert [x.get("text") for x in recs] == [None if t.split()[-1].isupper() else f"echo: {t}" for t in lines]
    assert "the stub refuses this prompt" in recs[5]["error"] and "HTTP 500" in recs[6]["error"]
    assert "ended without a finish reason" in recs[7]["error"]  # a stream cut mid-reply
    assert "6 line(s) answered, 3 failed" in r.stderr
    assert stub.max_active == 4  # never more than --parallel, and all of them used


def test_stub_n_samples_are_sent_together(stub):
    stub.max_active, first = 0, len(stub.bodies)
    r = run_cli("generate", "-m", stub.url, "--n", "3", "--seed", "40", "--jsonl", "--no-log", "hi", check=True)
    assert [json.loads(x)["index"] for x in r.stdout.splitlines()] == [0, 1, 2]
    assert sorted(b["seed"] for b in stub.bodies[first:]) == [40, 41, 42] and stub.max_active == 3


def test_stub_ctrl_c_cancels_the_requests_in_flight(stub):
    stub.disconnects = 0
    proc = subprocess.Popen([sys.executable, "-m", "llmcli", "generate", "-m", stub.url, "--each-line", "--parallel",
                             "3", "--no-log"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdin.write(b"SLOW a\nSLOW b\nSLOW c\nSLOW d\n")
    proc.stdin.close()
    _until(lambda: stub.active == 3, 60)
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=20) == 130
    assert time.monotonic() - started < 3
    _until(lambda: stub.active == 0, 10)  # a reply runs 20 s unless the client hangs up
    assert stub.disconnects == 3


def test_structured_output_on_an_unknown_server_is_refused_before_any_request(stub, bad):
    posts = stub.requests
    bad.run("generate", "-m", stub.url, "--json-schema", '{"type": "object"}', "Hi", expect=2,
            message="cannot enforce --json-schema")
    assert stub.requests == posts


def _until(cond, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_llama_cpp_python_server_gets_one_request_at_a_time_and_no_constraint(lcpp_server, bad):
    """Its server interrupts a running request when the next one arrives, ignores integer bounds in
    schemas and aborts on a GBNF syntax error: llmcli sends it neither."""
    url = lcpp_server.url
    bad.run("generate", "-m", url, "--each-line", "--parallel", "2", input="a\n", expect=2, message="--parallel 2")
    bad.run("generate", "-m", url, "--json-schema", '{"type": "object"}', "Hi", expect=2, message="--json-schema")
    (bad.work / "list.gbnf").write_text(LIST_GBNF)
    bad.run("generate", "-m", url, "--grammar", "list.gbnf", "Hi", expect=2, message="--grammar")
