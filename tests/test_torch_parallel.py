"""Batched decoding on the torch backend (issue 12): several sequences in one forward per step,
continuous admission, each with the records a single-sequence run gives."""

from __future__ import annotations

import json

import pytest

from llmcli.backends.base import Constraint, Message, SamplingParams

ARGS = ("generate", "--each-line", "--threads", "1", "--ctx", "256", "-t", "0", "--seed", "3", "--no-log",
        "--max-tokens", "8", "--stop", ".")


def _lines() -> bytes:
    """12 lines: prompts of different lengths, a blank line (4), invalid UTF-8 (7), one beyond the window (10)."""
    lines = [f"Name {i} {'big ' * (i % 3)}animals.".encode() for i in range(1, 13)]
    lines[3] = b""
    lines[6] = b"caf\xe9"
    lines[9] = ("word " * 300).encode()
    return b"\n".join(lines) + b"\n"


def _records(text: str) -> list[dict]:
    return [{k: v for k, v in json.loads(x).items() if k != "timings"} for x in text.splitlines() if x.strip()]


def test_parallel_4_gives_the_records_of_parallel_1_on_torch(cli, hf_model_dir):
    """Greedy records are identical, error lines stay error records in order, and with more lines than
    slots the rows freed by finished sequences took the later prompts (lengths differ: --stop)."""
    data = _lines()
    one = cli(*ARGS, "-m", str(hf_model_dir), "--parallel", "1", input=data)
    four = cli(*ARGS, "-m", str(hf_model_dir), "--parallel", "4", input=data)
    assert one.returncode == four.returncode == 1, four.stderr
    recs = _records(four.stdout)
    assert recs == _records(one.stdout)
    assert [r["line"] for r in recs] == [1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12]
    assert {r["line"] for r in recs if "error" in r} == {7, 10}
    assert all(r["backend"] == "torch" for r in recs if "error" not in r)
    assert len({r["usage"]["completion_tokens"] for r in recs if "usage" in r}) > 1


@pytest.fixture
def one_thread():
    """torch on one thread for this test: on a loaded 2-core box two OpenMP threads wait on each other
    (a token took 0.5–1 s instead of 0.11 s)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _final(events):
    return list(events)[-1]


def test_a_finished_sequence_frees_its_slot_for_the_next_prompt(torch_backend, one_thread):
    """Two slots: A stops after 2 tokens, so C goes into A's slot while B is still running; every
    sequence (C under a JSON schema) ends as its own single-sequence run does."""
    b = torch_backend
    prompts = [b.encode(messages=[Message("user", text)]) for text in ("Hi.", "Describe the sea.", "A person?")]
    schema = Constraint("json_schema", json.dumps({"type": "object", "properties": {"name": {"type": "string"}},
                                                   "required": ["name"]}))
    params = [SamplingParams(temperature=0, max_tokens=2), SamplingParams(temperature=0, max_tokens=12),
              SamplingParams(temperature=0, max_tokens=12, constraint=schema)]
    alone = [_final(b.stream(p, q)) for p, q in zip(prompts, params)]

    decoder = b.decoder(2)
    seqs = []
    b_running = []

    def admit():
        if decoder.free() and len(seqs) < 3:
            if len(seqs) == 2:
                b_running.append(not seqs[1].done)
            seqs.append(decoder.submit(prompts[len(seqs)], params[len(seqs)]))

    decoder.admit = admit
    try:
        admit()
        admit()
        got = [_final(s.events()) for s in seqs]
    finally:
        decoder.close()
    assert [s.slot for s in seqs] == [0, 1, 0]
    assert b_running == [True]  # C was admitted while B still ran
    assert [f.token_ids for f in got] == [f.token_ids for f in alone]
    assert [f.stats.generated_tokens for f in got] == [2, 12, len(alone[2].token_ids)]
    assert got[2].text == alone[2].text and got[2].text.startswith('{"name":')


def test_parallel_is_refused_where_torch_decodes_one_sequence_at_a_time(bad, hf_model_dir):
    """--compile (static cache, no lean step) decodes one sequence at a time: a usage error before any line."""
    bad.run("generate", "-m", str(hf_model_dir), "--compile", "--each-line", "--parallel", "2", expect=2,
            message="--parallel", input="a prompt\n")


def test_a_prompt_submitted_again_is_evaluated_once(torch_backend, one_thread):
    """``--n``'s machinery: 4 samples of one prompt submitted in a row, its keys/values evaluated once
    and copied to the other slots; each sample is the text its own seed gives alone."""
    b = torch_backend
    prompt = b.encode(messages=[Message("user", "Name a colour.")])
    params = [SamplingParams(temperature=0.8, seed=40 + i, max_tokens=6) for i in range(4)]
    b.reset()
    alone = [_final(b.stream(prompt, p)) for p in params]
    b.reset()
    decoder = b.decoder(4)
    try:
        seqs = [decoder.submit(prompt, p) for p in params]
        got = [_final(s.events()) for s in seqs]
    finally:
        decoder.close()
    assert [f.stats.prompt_tokens_processed for f in got] == [len(prompt.ids), 0, 0, 0]
    assert [f.stats.seed for f in got] == [40, 41, 42, 43]
    assert [f.token_ids for f in got] == [f.token_ids for f in alone]
    assert len({f.text for f in got}) > 1


def test_cli_n_4_on_torch_evaluates_the_prompt_once(cli, hf_model_dir):
    """``generate --n 4``: the samples run together in one decoder and the prompt is processed once
    (the issue's test); sample i is the run with seed S + i alone."""
    args = ("generate", "-m", str(hf_model_dir), "--threads", "1", "--no-log", "--max-tokens", "6", "-t", "0.8",
            "--jsonl", "--stats", "Name a colour.")
    four = cli(*args, "--n", "4", "--seed", "20", check=True)
    processed = [line.split(" processed")[0].rsplit("(", 1)[1] for line in four.stderr.splitlines()
                 if " processed" in line]
    prompt_tokens = json.loads(four.stdout.splitlines()[0])["usage"]["prompt_tokens"]
    assert processed == [str(prompt_tokens), "0", "0", "0"], four.stderr
    alone = cli(*args, "--seed", "22", check=True)
    assert json.loads(alone.stdout)["text"] == json.loads(four.stdout.splitlines()[2])["text"]
