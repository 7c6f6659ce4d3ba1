"""The run log (issue 15 item 2): real llmcli subprocesses writing a real SQLite file."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import run_cli

GEN = ("--temperature", "0", "--max-tokens", "4", "--ctx", "512")


def db_file(isolated_dirs) -> Path:
    return isolated_dirs / "data" / "logs.db"


def logs_json(*args: str) -> list[dict]:
    r = run_cli("logs", *args, "--json", check=True)
    return json.loads(r.stdout)


def db_bytes(isolated_dirs) -> bytes:
    """The database with its WAL and shared-memory files: everything SQLite wrote."""
    base = db_file(isolated_dirs)
    return b"".join(p.read_bytes() for p in (base, Path(f"{base}-wal"), Path(f"{base}-shm")) if p.exists())


def test_generate_chat_and_failed_run_are_recorded(gguf_path, isolated_dirs, tmp_path):
    g = run_cli("generate", "-m", str(gguf_path), *GEN, "--seed", "7", "--n", "2", "Name a colour", check=True)
    c = run_cli("chat", "-m", str(gguf_path), *GEN, "--no-save", input="Hi\nAnd in French?\n", check=True)
    f = run_cli("generate", "-m", str(tmp_path / "missing.gguf"), "Will fail")
    assert f.returncode == 1

    runs = logs_json("--limit", "10")
    assert [r["command"] for r in runs] == ["generate", "generate", "chat", "chat", "generate"]
    s0, s1, t1, t2, failed = runs
    # --n 2: one record per sample, seeds seed+i, outputs as printed (samples separated by a blank line)
    assert (s0["sample"], s1["sample"], s0["seed"], s1["seed"]) == (0, 1, 7, 8)
    assert g.stdout == f"{s0['output']}\n\n{s1['output']}\n"
    for r in (s0, s1):
        assert r["prompt"] == "Name a colour" and r["model"] == str(gguf_path) and r["backend"] == "llama.cpp"
        assert r["completion_tokens"] == 4 and r["finish_reason"] == "length" and r["prompt_tokens"] > 0
        assert r["params"]["max_tokens"] == 4 and r["params"]["temperature"] == 0
        assert r["timings"]["generated_tokens"] == 4 and r["error"] is None and r["files"] == []
    # chat: one record per turn, the user's message as prompt, the reply as output
    assert (t1["prompt"], t2["prompt"]) == ("Hi", "And in French?")
    assert c.stdout.startswith(t1["output"]) and t2["output"] in c.stdout
    assert t2["prompt_tokens"] > t1["prompt_tokens"]  # the second turn carries the first
    # a failed run is recorded with its error and no output
    assert failed["error"].startswith("model not found") and failed["output"] is None
    assert failed["prompt"] == "Will fail" and failed["model"] == str(tmp_path / "missing.gguf")

    shown = json.loads(run_cli("logs", "show", str(t2["id"]), "--json", check=True).stdout)
    assert shown == t2
    text = run_cli("logs", "show", str(s0["id"]), check=True).stdout
    assert "seed: 7" in text and s0["output"] in text

    # search: a word of an answer finds its run (FTS5), a word nobody wrote finds nothing
    word = max(t2["output"].split(), key=len).strip('.,!?"\'')
    found = logs_json("search", word)
    assert t2["id"] in [r["id"] for r in found]
    assert logs_json("search", "xylophonequartz") == []

    listing = run_cli("logs", check=True).stdout.splitlines()
    assert len(listing) == 5 and "model not found" in listing[-1]

    run_cli("logs", "rm", str(s0["id"]), str(s1["id"]), check=True)
    assert [r["id"] for r in logs_json()] == [t1["id"], t2["id"], failed["id"]]
    r = run_cli("logs", "rm", "--before", "2999-01-01", check=True)
    assert "deleted 3 runs" in r.stderr and logs_json() == []


def test_no_log_and_config_switch_leave_no_record(gguf_path, isolated_dirs):
    run_cli("generate", "-m", str(gguf_path), *GEN, "--no-log", "Hello", check=True)
    run_cli("chat", "-m", str(gguf_path), *GEN, "--no-save", "--no-log", input="Hi\n", check=True)
    run_cli("generate", "-m", str(gguf_path), *GEN, "Hello", env={"LLMCLI_LOG": "0"}, check=True)
    cfg = isolated_dirs / "config" / "config.toml"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text("log = false\n")
    run_cli("generate", "-m", str(gguf_path), *GEN, "Hello", check=True)
    assert not db_file(isolated_dirs).exists()
    cfg.unlink()
    run_cli("generate", "-m", str(gguf_path), *GEN, "Hello", check=True)
    assert len(logs_json()) == 1


def test_twenty_concurrent_processes_are_all_recorded(gguf_path, isolated_dirs):
    # One thread each: 20 llama.cpp processes whose worker threads spin-wait on a 2-core machine
    # otherwise take minutes for 4 tokens.
    procs = [subprocess.Popen([sys.executable, "-m", "llmcli", "generate", "-m", str(gguf_path), *GEN, "--threads", "1",
                               "--seed", str(i), f"Say the number {i}"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for i in range(20)]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err.decode()
        assert b"not logged" not in err, err.decode()
    runs = logs_json("--limit", "100")
    assert sorted(r["seed"] for r in runs) == list(range(20))
    by_seed = {r["seed"]: r for r in runs}
    for i, (out, _) in enumerate(outs):
        assert by_seed[i]["prompt"] == f"Say the number {i}"
        assert out.decode() == by_seed[i]["output"] + "\n"


def test_corrupt_database_never_fails_a_run(gguf_path, isolated_dirs):
    clean = run_cli("generate", "-m", str(gguf_path), *GEN, "--no-log", "Hello", check=True)
    db = db_file(isolated_dirs)
    db.parent.mkdir(parents=True, exist_ok=True)
    garbage = b"this is not a database, " * 400
    db.write_bytes(garbage)
    r = run_cli("generate", "-m", str(gguf_path), *GEN, "Hello")
    assert r.returncode == 0 and r.stdout == clean.stdout
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("warning: the run was not logged") and "damaged" in lines[0]
    assert db.read_bytes() == garbage  # never rewritten
    bad = run_cli("logs")
    assert bad.returncode == 1 and bad.stderr.startswith("error: cannot read the run log")


def test_locked_database_never_fails_a_run(gguf_path, isolated_dirs):
    run_cli("generate", "-m", str(gguf_path), *GEN, "First", check=True)
    clean = run_cli("generate", "-m", str(gguf_path), *GEN, "--no-log", "Hello", check=True)
    # Another process holds an exclusive transaction for the whole run.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys, time\n"
         f"c = sqlite3.connect({str(db_file(isolated_dirs))!r}, isolation_level=None)\n"
         "c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        start = time.monotonic()
        r = run_cli("generate", "-m", str(gguf_path), *GEN, "Hello")
        elapsed = time.monotonic() - start
    finally:
        holder.kill()
        holder.wait()
    assert r.returncode == 0 and r.stdout == clean.stdout
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "not logged" in lines[0] and "locked" in lines[0], r.stderr
    assert elapsed < 120  # a generous sanity bound: the lock wait is ~1 s (docs/logs.md)
    assert [x["prompt"] for x in logs_json()] == ["First"]  # the lock is gone: the log is readable again


def test_api_key_never_reaches_the_database(gguf_path, isolated_dirs):
    marker = "sk-MARKER-d41d8cd98f00b204"
    run_cli("generate", "-m", str(gguf_path), *GEN, "Hello",
            env={"LLMCLI_API_KEY": marker, "OPENAI_API_KEY": marker}, check=True)
    assert len(logs_json()) == 1
    # A model URL carrying credentials is stored without them (the remote backend, issue 11).
    from llmcli import logs

    logs.append([logs.Run("generate", prompt="p", model=f"http://user:{marker}@127.0.0.1:8000/v1?api_key={marker}"
                                                          f"&x=1#model-id")])
    stored = [r["model"] for r in logs_json()]
    assert stored[-1] == "http://127.0.0.1:8000/v1?x=1#model-id"
    assert marker.encode() not in db_bytes(isolated_dirs)


def test_size_cap_prunes_oldest_first(isolated_dirs):
    from llmcli import logs

    big = "lorem ipsum dolor " * 3000  # ~54 kB per run
    for i in range(40):
        logs.append([logs.Run("generate", prompt=f"run {i}", output=big)], max_mb=0.5)
    kept = [int(r["prompt"].split()[1]) for r in logs.recent(100)]
    assert 0 < len(kept) < 40 and kept == list(range(40 - len(kept), 40))  # the newest survive, in order
    assert db_file(isolated_dirs).stat().st_size < 2 * 1024 * 1024  # pages are given back, not only freed
    # the cap also comes from the config/env switch, through a real run
    r = run_cli("logs", "--json", env={"LLMCLI_LOG_MAX_MB": "0.3"}, check=True)
    assert len(json.loads(r.stdout)) == len(kept)  # reading never prunes


def test_bad_log_arguments(bad, isolated_dirs):
    bad.run("logs", "show", "abc", expect=2)
    bad.run("logs", "show", "123", expect=1, message="no run with id 123")
    bad.run("logs", "rm", expect=2, message="--before")
    bad.run("logs", "rm", "1", "--before", "2026-01-01", expect=2, message="--before")
    bad.run("logs", "rm", "--before", "yesterday", expect=2, message="--before")
    bad.run("logs", "--limit", "0", expect=2, message="--limit")
    bad.run("logs", "search", " ", expect=2, message="empty search")
    bad.run("generate", "hi", expect=2, env={"LLMCLI_LOG": "maybe"}, message="LLMCLI_LOG")
    bad.run("generate", "hi", expect=2, env={"LLMCLI_LOG_MAX_MB": "0"}, message="log_max_mb")
