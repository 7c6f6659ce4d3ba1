"""The remote backend through real OpenAI-compatible servers on 127.0.0.1 (llama-cpp-python's
server and llama.cpp's llama-server, both on the SmolLM2 GGUF): the same commands, flags,
pipes and records as a local model."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from conftest import run_cli

GREEDY = ("--temperature", "0")


def gen(server, *args, **kw):
    return run_cli("generate", "-m", server.url, *args, **kw)


def test_greedy_is_deterministic_and_json_record_matches_local_shape(remote_server, gguf_path):
    story = "Write a long story about a dragon."
    a = gen(remote_server, *GREEDY, "--max-tokens", "16", story, check=True)
    b = gen(remote_server, *GREEDY, "--max-tokens", "16", story, check=True)
    assert a.stdout.strip() and a.stdout == b.stdout
    rec = json.loads(gen(remote_server, *GREEDY, "--max-tokens", "16", "--json", story, check=True).stdout)
    local = json.loads(run_cli("generate", "-m", str(gguf_path), *GREEDY, "--max-tokens", "4", "--json", "Hi",
                               check=True).stdout)
    assert set(rec) == set(local) and set(rec["usage"]) == set(local["usage"])
    assert set(rec["timings"]) == set(local["timings"])
    assert rec["backend"] == "remote" and rec["model"] == remote_server.url
    assert rec["text"] == a.stdout.rstrip("\n")
    assert rec["usage"]["completion_tokens"] == 16 and rec["finish_reason"] == "length"
    assert rec["timings"]["time_to_first_token_s"] > 0


def test_seed_reproducible_and_different_seeds_differ(remote_server):
    args = ("--temperature", "1.5", "--top-k", "0", "--top-p", "1", "--min-p", "0", "--max-tokens", "24",
            "Write a line about the sea.")
    a = gen(remote_server, "--seed", "7", *args, check=True).stdout
    b = gen(remote_server, "--seed", "7", *args, check=True).stdout
    c = gen(remote_server, "--seed", "8", *args, check=True).stdout
    assert a == b and a != c


def test_stop_string_cuts_and_is_not_printed(remote_server):
    full = gen(remote_server, *GREEDY, "--max-tokens", "24", "Count from one to ten in words.", check=True).stdout
    words = full.split()
    assert len(words) > 4, full
    stop = words[3]
    cut = gen(remote_server, *GREEDY, "--max-tokens", "24", "--stop", stop, "--json",
              "Count from one to ten in words.", check=True)
    rec = json.loads(cut.stdout)
    assert rec["text"] == full[: full.index(stop)] and rec["finish_reason"] == "stop"


def test_n_samples_use_consecutive_seeds(remote_server):
    args = ("--temperature", "1.2", "--max-tokens", "8", "Say a word.")
    out = gen(remote_server, "--n", "3", "--seed", "40", "--jsonl", *args, check=True).stdout
    recs = [json.loads(line) for line in out.splitlines()]
    assert [r["seed"] for r in recs] == [40, 41, 42] and [r["index"] for r in recs] == [0, 1, 2]
    single = json.loads(gen(remote_server, "--seed", "41", "--json", *args, check=True).stdout)
    assert single["text"] == recs[1]["text"]


def test_raw_prompt_uses_completions(remote_server):
    out = gen(remote_server, "--raw", *GREEDY, "--max-tokens", "6", "--json", "The capital of France is",
              check=True)
    rec = json.loads(out.stdout)
    assert rec["text"].strip() and rec["usage"]["completion_tokens"] == 6


def test_first_bytes_arrive_before_the_reply_ends(remote_server):
    proc = subprocess.Popen([sys.executable, "-m", "llmcli", "generate", "-m", remote_server.url, *GREEDY,
                             "--max-tokens", "120", "Tell a long story about a dragon."],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    stamps = []

    def reader():
        while True:
            chunk = proc.stdout.read1(4096)
            if not chunk:
                break
            stamps.append((time.monotonic(), chunk))

    t = threading.Thread(target=reader)
    t.start()
    proc.wait(timeout=300)
    t.join()
    assert proc.returncode == 0, proc.stderr.read().decode()
    assert len(stamps) > 3
    assert stamps[-1][0] - stamps[0][0] > 0.05  # text streamed over time, not in one block at the end


def test_tokenize_round_trip_equals_local_ids(remote_server, gguf_path):
    text = "Hello world, the café is open! <|im_start|>"
    remote = run_cli("tokenize", "-m", remote_server.url, "--json", text, check=True)
    local = run_cli("tokenize", "-m", str(gguf_path), "--json", text, check=True)
    ids = json.loads(remote.stdout)["ids"]
    assert ids == json.loads(local.stdout)["ids"]
    count = run_cli("tokenize", "-m", remote_server.url, "--count", text, check=True)
    assert count.stdout.strip() == str(len(ids))
    plain = "Hello world, the café is open!"
    plain_ids = json.loads(run_cli("tokenize", "-m", remote_server.url, "--json", plain, check=True).stdout)["ids"]
    back = run_cli("detokenize", "-m", remote_server.url, *map(str, plain_ids), check=True)
    assert back.stdout == plain + "\n"


def test_chat_piped_two_turns_and_session_without_key(remote_server, tmp_path, isolated_dirs):
    key_env = {"LLMCLI_API_KEY": "sk-never-saved-123"}
    r = run_cli("chat", "-m", remote_server.url, *GREEDY, "--max-tokens", "12", "--session", "remote1",
                input="Hi\nAnd in French?\n", env=key_env, check=True)
    assert r.stdout.count("\n") >= 2 and "sk-never-saved-123" not in r.stdout + r.stderr
    saved = list((isolated_dirs / "data").rglob("remote1*.json"))
    assert saved, list((isolated_dirs / "data").rglob("*"))
    text = saved[0].read_text()
    assert "sk-never-saved-123" not in text
    conv = json.loads(text)
    assert remote_server.url in json.dumps(conv)
    assert len([m for m in conv["messages"] if m["role"] == "assistant"]) == 2
    # The conversation resumes against the same server.
    again = run_cli("chat", "--session", "remote1", *GREEDY, "--max-tokens", "8", input="Thanks\n", env=key_env,
                    check=True)
    assert again.stdout.strip()


def test_unsupported_parameter_is_refused(remote_server):
    r = gen(remote_server, "--no-repeat-ngram-size", "3", "Hi")
    assert r.returncode == 2 and "--no-repeat-ngram-size" in r.stderr and r.stdout == ""


def test_unknown_model_id_lists_ids(remote_server):
    r = run_cli("generate", "-m", remote_server.url + "#no-such-model", "Hi")
    assert r.returncode == 1 and r.stdout == ""
    assert "no-such-model" in r.stderr and "smollm2" in r.stderr and r.stderr.count("error:") == 1
    ok = run_cli("generate", "-m", remote_server.url + "#smollm2", *GREEDY, "--max-tokens", "3", "Hi", check=True)
    assert ok.stdout.strip()


def test_refused_connection_and_dns_failure(bad):
    import remote_servers

    port = remote_servers.free_port()
    bad.run("generate", "-m", f"http://127.0.0.1:{port}/v1", "Hi", expect=1, message="connection refused")
    bad.run("generate", "-m", "http://no-such-host.invalid:8000/v1", "Hi", expect=1, message="cannot resolve")


def test_non_openai_server(tmp_path, bad):
    import remote_servers

    port = remote_servers.free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        remote_servers._wait_port(f"127.0.0.1:{port}", [])
        bad.run("generate", "-m", f"http://127.0.0.1:{port}/v1", "Hi", expect=1, message="does not speak the OpenAI")
    finally:
        proc.terminate()
        proc.wait()


@pytest.mark.parametrize("args", [("--device", "cuda"), ("--backend", "torch"), ("--gpu-layers", "3")])
def test_local_only_options_are_refused_for_a_url(bad, args):
    bad.run("generate", "-m", "http://127.0.0.1:9/v1", *args, "Hi", expect=2, message=args[0])


def test_credentials_in_url_are_refused(bad):
    r = bad.run("generate", "-m", "http://user:sk-secret@127.0.0.1:9/v1", "Hi", expect=2, message="credentials")
    assert "sk-secret" not in r.stderr


def test_a_url_model_imports_no_local_backend_library():
    """``generate -m URL`` loads neither torch, transformers nor llama_cpp (start-up time)."""
    import remote_servers

    port = remote_servers.free_port()
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "llmcli", "generate", "-m",
                           f"http://127.0.0.1:{port}/v1", "Hi"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "connection refused" in proc.stderr
    imported = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    assert "openai" in imported
    assert not imported & {"torch", "transformers", "llama_cpp", "numpy"}, imported & {"torch", "transformers",
                                                                                        "llama_cpp", "numpy"}


def test_prompt_longer_than_the_server_window_is_one_clean_error(remote_server, bad):
    long_prompt = "word " * 3000  # the servers run with a 2048-token window
    r = bad.run("generate", "-m", remote_server.url, "--max-tokens", "4", long_prompt, expect=r_code(remote_server))
    assert remote_server.url in r.stderr


def r_code(server) -> int:
    """llama-server refuses the request (HTTP 400: a usage error); llama-cpp-python's server starts
    the stream and ends it without a reply (a server error)."""
    return 2 if server.kind == "llama-server" else 1


def test_models_import_url_then_use_the_name_everywhere(lcpp_server, isolated_dirs):
    env = {"LLMCLI_API_KEY": "sk-never-in-the-registry"}
    r = run_cli("models", "import", lcpp_server.url, "--model-id", "smollm2", "--as", "big", env=env, check=True)
    assert "big" in r.stderr
    reg = (isolated_dirs / "data" / "registry.json").read_text()
    assert "sk-never-in-the-registry" not in reg
    rec = json.loads(reg)["models"]["big"]
    assert rec == {**rec, "kind": "remote", "url": lcpp_server.url, "model_id": "smollm2"}
    out = run_cli("generate", "-m", "big", *GREEDY, "--max-tokens", "4", "--json", "Hi", env=env, check=True)
    assert json.loads(out.stdout)["backend"] == "remote"
    assert run_cli("tokenize", "-m", "big", "--count", "Hello world", check=True).stdout.strip() == "2"
    assert "served at" in run_cli("models", "list", check=True).stdout
    show = json.loads(run_cli("models", "show", "big", "--json", check=True).stdout)
    assert show["url"] == lcpp_server.url and show["model_id"] == "smollm2"


def test_models_import_url_bad_input(bad):
    bad.run("models", "import", "http://user:pw@127.0.0.1:9/v1", expect=2, message="credentials")
    bad.run("models", "import", "http://127.0.0.1:9/v1#a", "--model-id", "b", expect=2, message="--model-id")
    bad.run("models", "import", "./model.gguf", "--model-id", "b", expect=2, message="URL only")
