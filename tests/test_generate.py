"""`llmcli generate` end to end: the real SmolLM2 GGUF in a real subprocess with pipes."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import run_cli

STORY = "Write a long story about a dragon who learns to paint."


def gen(gguf, *args, input=None, check=True):
    return run_cli("generate", "-m", str(gguf), *args, input=input, check=check)


def test_greedy_is_deterministic(gguf_path):
    a = gen(gguf_path, "--temperature", "0", "--max-tokens", "24", "What is the capital of France?")
    b = gen(gguf_path, "--temperature", "0", "--max-tokens", "24", "What is the capital of France?")
    assert a.stdout.strip() and a.stdout == b.stdout


def test_seed_reproduces_and_different_seeds_differ(gguf_path):
    args = ["--temperature", "1.0", "--max-tokens", "24", "--jsonl", STORY]
    a = json.loads(gen(gguf_path, "--seed", "7", *args).stdout)
    b = json.loads(gen(gguf_path, "--seed", "7", *args).stdout)
    c = json.loads(gen(gguf_path, "--seed", "8", *args).stdout)
    assert a["text"] == b["text"] and a["seed"] == 7
    assert a["text"] != c["text"]


def test_n_gives_independent_reproducible_records(gguf_path):
    r = gen(gguf_path, "--n", "3", "--seed", "11", "--temperature", "1.0", "--max-tokens", "16", "--jsonl",
            "Name a colour")
    records = [json.loads(line) for line in r.stdout.splitlines()]
    assert [x["index"] for x in records] == [0, 1, 2]
    assert [x["seed"] for x in records] == [11, 12, 13]
    assert len({x["text"] for x in records}) > 1
    again = json.loads(gen(gguf_path, "--seed", "12", "--temperature", "1.0", "--max-tokens", "16", "--json",
                           "Name a colour").stdout)
    assert again["text"] == records[1]["text"]  # sample i is exactly the run with seed+i
    arr = json.loads(gen(gguf_path, "--n", "2", "--temperature", "0", "--max-tokens", "4", "--json", "Hi").stdout)
    assert isinstance(arr, list) and len(arr) == 2


def test_max_tokens_exact(gguf_path):
    r = json.loads(gen(gguf_path, "--temperature", "0", "--max-tokens", "7", "--json", STORY).stdout)
    assert r["usage"]["completion_tokens"] == 7
    assert r["finish_reason"] == "length"


def test_stop_string_ends_output_and_is_not_printed(gguf_path):
    full = gen(gguf_path, "--temperature", "0", "--max-tokens", "40", STORY).stdout
    words = full.split()
    assert len(words) > 6
    stop = words[5]
    cut = gen(gguf_path, "--temperature", "0", "--max-tokens", "40", "--stop", stop, STORY).stdout
    assert stop not in cut
    assert cut.rstrip("\n") == full[: full.index(stop)]
    rec = json.loads(gen(gguf_path, "--temperature", "0", "--max-tokens", "40", "--stop", stop, "--json", STORY).stdout)
    assert rec["finish_reason"] == "stop" and stop not in rec["text"]


def test_streaming_first_token_arrives_before_exit(gguf_path):
    proc = subprocess.Popen([sys.executable, "-m", "llmcli", "generate", "-m", str(gguf_path), "--temperature", "0",
                             "--max-tokens", "400", "--ctx", "1024", STORY],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        first = proc.stdout.read(1)
        assert first
        assert proc.poll() is None, "the process had already finished: output was not streamed"
    finally:
        proc.kill()
        proc.wait()


def test_stdin_argument_and_both(gguf_path):
    def prompt_tokens(*args, input=None):
        return json.loads(gen(gguf_path, "--temperature", "0", "--max-tokens", "1", "--json", *args,
                              input=input).stdout)["usage"]["prompt_tokens"]

    def chat_count(text):
        return int(run_cli("tokenize", "-m", str(gguf_path), "--chat", "--count", text, check=True).stdout)

    context = "The meeting moved to Thursday at 3pm in room 4."
    only_arg = prompt_tokens("Summarise this.")
    only_stdin = prompt_tokens(input=context)
    both = prompt_tokens("Summarise this.", input=context + "\n")
    assert only_arg == chat_count("Summarise this.")
    assert only_stdin == chat_count(context)
    assert both == chat_count(context + "\n\nSummarise this.")


def test_stdout_holds_only_generated_text(gguf_path):
    plain = gen(gguf_path, "--temperature", "0", "--max-tokens", "12", "--stats", "Say hello")
    rec = json.loads(gen(gguf_path, "--temperature", "0", "--max-tokens", "12", "--json", "Say hello").stdout)
    assert plain.stdout == rec["text"] + "\n"
    assert "tok/s" in plain.stderr and "tok/s" not in plain.stdout
    assert "time to first token" in plain.stderr
    assert rec["timings"]["generation_tokens_per_s"] > 0
    assert "\x1b[" not in plain.stdout + plain.stderr  # no colour codes when not a TTY


def test_raw_uses_tokenize_policy(gguf_path):
    raw = json.loads(gen(gguf_path, "--raw", "--temperature", "0", "--max-tokens", "1", "--json",
                         "<|im_start|>user").stdout)
    count = int(run_cli("tokenize", "-m", str(gguf_path), "--count", "<|im_start|>user", check=True).stdout)
    assert raw["usage"]["prompt_tokens"] == count


def test_no_repeat_ngram_size_runs(gguf_path):
    r = json.loads(gen(gguf_path, "--temperature", "0", "--max-tokens", "60", "--no-repeat-ngram-size", "2",
                       "--json", "Repeat after me: la la la la la la la la la la").stdout)
    assert r["usage"]["completion_tokens"] > 0


def test_ctrl_c_exits_130_with_partial_output(gguf_path):
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-m", "llmcli", "generate", "-m", str(gguf_path), "--temperature", "0",
                             "--max-tokens", "2000", "--ctx", "4096",
                             "--raw", "Once upon a time"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    first = proc.stdout.read(1)
    assert first
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert b"Traceback" not in err
    assert (first + out).strip()


def test_embedded_default_model_is_used(gguf_path):
    r = run_cli("generate", "--temperature", "0", "--max-tokens", "3", "-v", "Hi", check=True)
    assert "embedded" in r.stderr and r.stdout.strip()


def test_config_file_defaults_are_overridden_by_flags(gguf_path, isolated_dirs):
    cfg = isolated_dirs / "config"
    cfg.mkdir(parents=True, exist_ok=True)
    (cfg / "config.toml").write_text(f'model = "{gguf_path}"\n[sampling]\nmax_tokens = 3\ntemperature = 0\n')
    r = json.loads(run_cli("generate", "--json", "Tell me a story", check=True).stdout)
    assert r["usage"]["completion_tokens"] == 3
    r = json.loads(run_cli("generate", "--json", "--max-tokens", "5", "Tell me a story", check=True).stdout)
    assert r["usage"]["completion_tokens"] == 5
    r = json.loads(run_cli("generate", "--json", "Tell me a story", env={"LLMCLI_MAX_TOKENS": "4"},
                           check=True).stdout)
    assert r["usage"]["completion_tokens"] == 4
