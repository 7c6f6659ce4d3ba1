"""The remote backend against real servers that the tests start, stop, kill or lock with an API
key, plus distributed llama.cpp (llama-server with two rpc-server workers) and the chat REPL in
a real pseudo-terminal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pexpect
import pytest

import remote_servers
from conftest import run_cli
from test_chat_pty import PROMPT, command, spawn, transcript, turn

GREEDY = ("--temperature", "0")
SECRET = "sk-test-9f8e7d6c5b4a"


def start(kind: str, request, gguf_path, server_logs, **kw):
    if kind == "llama-server":
        s = remote_servers.start_llama_server(request.getfixturevalue("llama_tools_bins"), gguf_path, server_logs,
                                              **kw)
    else:
        s = remote_servers.start_llama_cpp_python(gguf_path, server_logs, **kw)
    request.addfinalizer(s.stop)
    return s


KINDS = pytest.mark.parametrize("kind", ["llama-cpp-python", "llama-server"])


@KINDS
def test_api_key_missing_wrong_and_right(kind, request, gguf_path, server_logs, bad):
    s = start(kind, request, gguf_path, server_logs, api_key=SECRET)
    r = bad.run("generate", "-m", s.url, "Hi", expect=1, message="requires an API key")
    wrong = "sk-wrong-0000"
    for args, env in (((("--api-key", wrong),), {}), ((), {"LLMCLI_API_KEY": wrong})):
        flat = [a for pair in args for a in pair]
        r = bad.run("generate", "-m", s.url, *flat, "Hi", expect=1, env=env, message="refused the API key")
        assert wrong not in r.stderr and SECRET not in r.stderr
    # The right key, from each source in order: --api-key beats LLMCLI_API_KEY beats OPENAI_API_KEY.
    for args, env in ((("--api-key", SECRET), {"LLMCLI_API_KEY": wrong}),
                      ((), {"LLMCLI_API_KEY": SECRET, "OPENAI_API_KEY": wrong}),
                      ((), {"OPENAI_API_KEY": SECRET})):
        ok = run_cli("generate", "-m", s.url, *args, *GREEDY, "--max-tokens", "3", "--json", "-v", "Hi", env=env)
        assert ok.returncode == 0, ok.stderr
        assert SECRET not in ok.stdout + ok.stderr


def _start_generate(url: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "llmcli", "generate", "-m", url, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)


def _first_bytes(proc: subprocess.Popen) -> bytes:
    first = proc.stdout.read1(4096)
    assert first, proc.stderr.read().decode()
    return first


@KINDS
@pytest.mark.parametrize("json_out", [False, True])
def test_server_killed_mid_stream(kind, json_out, request, gguf_path, server_logs):
    s = start(kind, request, gguf_path, server_logs)
    story = ("--max-tokens", "400", "--temperature", "0", "Write a very long story about a dragon.")
    if json_out:
        # --json prints at the end: wait until the server is generating, then kill it.
        proc = _start_generate(s.url, "--json", *story)
        time.sleep(3.0)
        s.main.kill()
        out, err = proc.communicate(timeout=120)
        rec = json.loads(out)
        assert rec["finish_reason"] == "error"
    else:
        proc = _start_generate(s.url, *story)
        first = _first_bytes(proc)
        s.main.kill()
        rest, err = proc.communicate(timeout=120)
        assert (first + rest).strip()  # what was printed stays
    assert proc.returncode == 1
    lines = [ln for ln in err.decode().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err.decode(), err.decode()


@KINDS
def test_ctrl_c_mid_stream_closes_the_request(kind, request, gguf_path, server_logs):
    s = start(kind, request, gguf_path, server_logs)
    proc = _start_generate(s.url, "--max-tokens", "1500", *GREEDY, "Write a very long story about a dragon.")
    _first_bytes(proc)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    # One slot only: had the request stayed open, the server would still be writing the story.
    t0 = time.monotonic()
    r = run_cli("generate", "-m", s.url, *GREEDY, "--max-tokens", "2", "--json", "Hi", check=True)
    assert json.loads(r.stdout)["usage"]["completion_tokens"] == 2
    assert time.monotonic() - t0 < 30


def test_chat_in_a_pseudo_terminal(llama_server, tmp_path, isolated_dirs):
    c = spawn(["-m", llama_server.url, *GREEDY, "--max-tokens", "16", "--stats", "--session", "rpty"], cwd=tmp_path)
    try:
        c.expect("llmcli chat · ")
        c.expect_exact(PROMPT)
        turn(c, "Hi")
        turn(c, "And in French?")
        command(c, "/undo", "dropped the last exchange")
        c.sendline("/retry")
        c.expect(r"finish: (stop|length)")
        c.expect_exact(PROMPT)
        command(c, "/context", r"context: \d+ / 2048 tokens used")  # counted by the server's tokenizer
        command(c, "/set max_tokens 600", "max_tokens = 600")
        # The 135M model may end its reply (EOS) within half a second on an idle machine: interrupt
        # as soon as the reply's first word is on the screen, not after a fixed pause.
        c.sendline("Write a very long story about a dragon.")
        c.expect_exact("dragon.")  # the echo
        c.expect(r"[A-Za-z]{3}")  # reply text (terminal escape sequences end in a single letter)
        c.sendintr()
        c.expect("interrupted: the partial reply is kept")
        c.expect_exact(PROMPT)
        command(c, "/set max_tokens 8", "max_tokens = 8")
        turn(c, "Thanks")
        c.sendline("/exit")
        c.expect(pexpect.EOF)
    finally:
        c.close()
    assert c.exitstatus == 0, transcript(c)
    from llmcli.chat.conversation import Conversation

    conv = Conversation.from_json((isolated_dirs / "data" / "sessions" / "rpty.json").read_text())
    users = [m.content for m in conv.messages if m.role == "user"]
    assert users == ["Hi", "Write a very long story about a dragon.", "Thanks"]
    assert conv.messages[1].attempt == 1 and conv.messages[3].interrupted


def test_distributed_rpc_workers_give_the_single_process_output(llama_tools_bins, llama_server, gguf_path,
                                                                 server_logs):
    cluster = remote_servers.start_rpc_cluster(llama_tools_bins, gguf_path, server_logs)
    try:
        workers = cluster.procs[:-1]
        assert all("Accepted client connection" in w.log() for w in workers)  # the layers went to the workers
        for prompt in ("Name three colours.", "Why is the sky blue?"):
            args = (*GREEDY, "--max-tokens", "32", prompt)
            single = run_cli("generate", "-m", llama_server.url, *args, check=True).stdout
            split = run_cli("generate", "-m", cluster.url, *args, check=True).stdout
            assert split == single and single.strip()
        ids = run_cli("tokenize", "-m", cluster.url, "--json", "Hello", check=True).stdout
        assert json.loads(ids)["ids"]
    finally:
        cluster.stop()  # the server first: it aborts when a worker vanishes under it
    assert all(not p.alive() for p in cluster.procs)
    assert os.path.exists(cluster.main.log_path)
