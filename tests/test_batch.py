"""Batch mode (issue 12): generate --each-line, JSONL records in input order, error records,
documented seeds, --resume after a killed run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from llmcli.cli.batch import Line, line_seed, split_lines

BASE = ("generate", "--each-line", "--threads", "1", "--ctx", "256", "--max-tokens", "3", "-t", "0.7",
        "--seed", "11", "--no-log")


def corpus() -> bytes:
    """50 input lines: prompts, a blank line (7), invalid UTF-8 (13) and one far beyond the window (29)."""
    lines = [f"Say the number {i} in words.".encode() for i in range(1, 51)]
    lines[6] = b"   "
    lines[12] = b"caf\xe9 au lait"
    lines[28] = ("word " * 600).encode()
    return b"\n".join(lines) + b"\n"


def records(text: str) -> list[dict]:
    return [json.loads(x) for x in text.splitlines() if x.strip()]


def comparable(recs: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "timings"} for r in recs]


def test_split_lines_keeps_numbers_and_marks_bad_utf8():
    got = list(split_lines([b"a\n", b"\n", b"  \r\n", b"b\xff\n", b"c"]))
    assert got == [Line(1, "a"), Line(4, None, "line 4 is not valid UTF-8 (byte 2)"), Line(5, "c")]


def test_line_seed_is_documented_and_wraps():
    assert [line_seed(10, k, i, 2) for k in (1, 2) for i in (0, 1)] == [10, 11, 12, 13]
    assert line_seed(2**32 - 2, 2, 0, 1) == 0


def test_batch_records_in_order_with_error_records_then_resume_after_kill(cli, gguf_path, tmp_path):
    data = corpus()
    full = cli(*BASE, "-m", str(gguf_path), input=data)
    assert full.returncode == 1, full.stderr  # documented: some line failed
    assert full.stderr.strip().splitlines()[-1].startswith("error: 2 line(s) failed")
    recs = records(full.stdout)
    assert [r["line"] for r in recs] == [n for n in range(1, 51) if n != 7]
    by_line = {r["line"]: r for r in recs}
    assert by_line[13] == {"line": 13, "error": "line 13 is not valid UTF-8 (byte 4)"}
    assert set(by_line[29]) == {"line", "error"} and "context window" in by_line[29]["error"]
    good = [r for r in recs if "error" not in r]
    assert len(good) == 47 and all(r["seed"] == 11 + r["line"] - 1 for r in good)

    # The same batch killed after 20 records, then resumed into the same file.
    out = tmp_path / "answers.jsonl"
    with open(out, "wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "llmcli", *BASE, "-m", str(gguf_path)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        proc.stdin.write(data)
        proc.stdin.close()
        for _ in range(20):
            sink.write(proc.stdout.readline())
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    with open(out, "ab") as sink:
        resumed = subprocess.run([sys.executable, "-m", "llmcli", *BASE, "-m", str(gguf_path), "--resume", str(out)],
                                 input=data, stdout=sink, stderr=subprocess.PIPE)
    assert resumed.returncode == 1
    assert "skipped (--resume)" in resumed.stderr.decode()
    assert comparable(records(out.read_text())) == comparable(recs)


def test_parallel_4_gives_the_records_of_parallel_1_for_greedy_decoding(cli, gguf_path):
    """Several sequences in one llama_batch per step, admitted as others finish (lines of different
    lengths finish at different steps), with error lines interleaved: the same records, in order."""
    data = b"".join(corpus().splitlines(keepends=True)[:16])  # blank line 7, bad UTF-8 line 13
    args = [a if a != "0.7" else "0" for a in BASE] + ["-m", str(gguf_path), "--max-tokens", "10", "--stop", "."]
    one = cli(*args, "--parallel", "1", input=data)
    four = cli(*args, "--parallel", "4", input=data)
    assert one.returncode == four.returncode == 1, four.stderr
    assert comparable(records(four.stdout)) == comparable(records(one.stdout))
    assert len({r["usage"]["completion_tokens"] for r in records(one.stdout) if "usage" in r}) > 1


@pytest.mark.parametrize("args,message", [
    (("--parallel", "2"), "--parallel needs --each-line"),
    (("--each-line", "--parallel", "2", "--reasoning-budget", "5"), "cannot be combined with --parallel"),
    (("--each-line", "--parallel", "65"), "--parallel"),
    (("--resume", "x.jsonl"), "--resume needs --each-line"),
    (("--each-line", "--json"), "--json cannot be combined"),
    (("--each-line", "-f", "-"), "stdin carries the prompts"),
    (("--each-line", "--resume", "torn.jsonl"), "is incomplete"),
    (("--each-line", "--resume", "notes.txt"), "line 1 of the --resume file"),
])
def test_batch_flag_errors(bad, args, message):
    (bad.work / "torn.jsonl").write_text('{"line": 1, "index": 0, "text": "a"}\n{"line": 2, "ind')
    (bad.work / "notes.txt").write_text("hello\n")
    bad.run("generate", *args, expect=2, message=message, input="a prompt\n")


def test_n_evaluates_the_prompt_once_and_gives_the_single_sequence_samples(cli, gguf_path):
    """--n N on llama.cpp decodes the samples together from one evaluation of the prompt (its keys/values
    copied to the other sequences): the processed-prompt count adds up to the prompt length once, and
    sample i is the text a single-sequence run with seed S + i gives, sampled or greedy. In batch mode the
    samples of a line share their line's prompt the same way."""
    from llmcli.backends.base import Message, SamplingParams
    from llmcli.backends.llamacpp import LlamaCppBackend

    run = ("generate", "-m", str(gguf_path), "--ctx", "1024", "--threads", "1", "--no-log", "--jsonl",
           "--max-tokens", "12")
    sampled = records(cli(*run, "--n", "4", "--seed", "21", "-t", "0.9", "Name a colour").stdout)
    greedy = records(cli(*run, "--n", "2", "-t", "0", "Name a colour").stdout)
    backend = LlamaCppBackend(gguf_path, ctx_cap=1024, threads=1)  # the CLI runs' settings, one sequence
    try:
        prompt = backend.encode(messages=[Message("user", "Name a colour")])
        singles = [list(backend.stream(prompt, SamplingParams(max_tokens=12, **kw)))[-1].text
                   for kw in [dict(temperature=0.9, seed=21 + i) for i in range(4)] + [dict(temperature=0)]]
    finally:
        backend.close()
    assert [r["timings"]["prompt_tokens_processed"] for r in sampled] == [len(prompt.ids), 0, 0, 0]
    assert [r["text"] for r in sampled] == singles[:4]
    assert len({r["text"] for r in sampled}) > 1
    assert [r["text"] for r in greedy] == singles[4:] * 2

    lines = cli("generate", "--each-line", "-m", str(gguf_path), "--ctx", "1024", "--threads", "1", "--no-log",
                "--max-tokens", "4", "--n", "2", "--parallel", "4", "--seed", "3", input=b"Hi\nName a fruit\n")
    assert lines.returncode == 0, lines.stderr
    assert [(r["line"], r["index"], r["timings"]["prompt_tokens_processed"] > 0)
            for r in records(lines.stdout)] == [(1, 0, True), (1, 1, False), (2, 0, True), (2, 1, False)]


def test_parallel_lines_share_a_long_common_prefix_in_aligned_units(cli, gguf_path, tmp_path):
    """Lines behind the same long instruction (-f) take its keys/values from another slot instead of
    evaluating it again, in whole 64-token units as the single-sequence cache reuses it: the same
    greedy records as --parallel 1, and fewer prompt tokens processed than the prompt holds."""
    instr = tmp_path / "instructions.txt"
    instr.write_text("Rewrite the sentence in a formal register, keep every fact, answer in one line. " * 8)
    data = b"the cat sat on the mat\nmy dog likes long walks\nit rained all day yesterday\n"
    args = ("generate", "--each-line", "-m", str(gguf_path), "--ctx", "1024", "--threads", "1", "--no-log",
            "-t", "0", "--seed", "1", "--max-tokens", "4", "-f", str(instr))
    one = cli(*args, "--parallel", "1", input=data)
    two = cli(*args, "--parallel", "2", input=data)
    assert one.returncode == two.returncode == 0, two.stderr
    assert comparable(records(two.stdout)) == comparable(records(one.stdout))
    t = [r["timings"] for r in records(two.stdout)]
    assert t[0]["prompt_tokens_processed"] == t[0]["prompt_tokens"] > 128
    assert all(0 < x["prompt_tokens"] - x["prompt_tokens_processed"] <= x["prompt_tokens"] - 2 and
               (x["prompt_tokens"] - x["prompt_tokens_processed"]) % 64 == 0 for x in t[1:])
