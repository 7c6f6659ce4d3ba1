"""Bad-input rows of issue 10 rooted in value parsing: every one a real subprocess that must end in
one clean `error:` line, the right exit code, nothing on stdout and no user file changed. None of
them loads a model: values are parsed and range-checked before that (which is also the point)."""

from __future__ import annotations

import hashlib
import json

import pytest

FLAG_ROWS = [
    # (args, message the error line must contain)
    (["generate", "--threads", "1661992959", "hi"], "--threads 1661992959"),  # aborted llama.cpp (bad_alloc)
    (["generate", "--threads", "4294967296", "hi"], "1..1024"),  # wrapped to 0 through ctypes
    (["generate", "--threads", "0", "hi"], "--threads"),
    (["generate", "--top-k", "1.5", "hi"], "--top-k"),
    (["generate", "--top-k", "2147483648", "hi"], "0..2147483647"),
    (["generate", "--ctx", "1", "hi"], "256"),  # decided: refused, not silently raised to 256
    (["generate", "--ctx", "16777217", "hi"], "--ctx"),
    (["generate", "--seed", "-1", "hi"], "--seed"),
    (["generate", "--seed", "4294967295", "hi"], "0..4294967294"),
    (["generate", "--seed", "4294967294", "--n", "2", "hi"], "--seed 4294967294 with --n 2"),  # defect 11
    (["generate", "--n", "0", "hi"], "--n"),
    (["generate", "-n", "1025", "hi"], "--n"),
    (["generate", "--gpu-layers", "-2", "hi"], "--gpu-layers"),
    (["generate", "--gpu-layers", "99999999999", "hi"], "--gpu-layers"),
    (["generate", "--no-repeat-ngram-size", "2.5", "hi"], "--no-repeat-ngram-size"),
    (["generate", "--max-tokens", "0", "hi"], "--max-tokens"),
    (["generate", "--max-tokens", "true", "hi"], "--max-tokens"),
    (["generate", "--temperature", "nan", "hi"], "--temperature"),
    (["generate", "-t", "inf", "hi"], "--temperature"),
    (["generate", "--top-p", "0", "hi"], "--top-p"),
    (["generate", "--min-p", "2", "hi"], "--min-p"),
    (["generate", "--repeat-penalty", "0", "hi"], "--repeat-penalty"),
    (["generate", "--device", "tpu", "hi"], "--device"),
    (["generate", "--dtype", "int8", "hi"], "--dtype"),
    (["generate", "--backend", "vllm", "hi"], "--backend"),
    (["generate", "--think", "loud", "hi"], "--think"),
    (["generate", "--stop", "", "hi"], "--stop"),
    (["generate", "-m", "", "hi"], "--model"),  # silently used the default model before
    (["chat", "--threads", "99999"], "--threads"),
    (["chat", "--top-k", "-1"], "--top-k"),
    (["chat", "-m", ""], "--model"),
    (["tokenize", "-m", "", "hi"], "--model"),
    (["tokenize", "--backend", "nope", "hi"], "--backend"),
    (["perplexity", "--ctx", "1"], "--ctx"),
    (["perplexity", "--ctx", "99999999999"], "--ctx"),
    (["perplexity", "--stride", "0"], "--stride"),
    (["perplexity", "--threads", "4294967296"], "--threads"),
    (["bench", "--threads", "0"], "--threads"),
    (["detokenize", "[true]"], "token id true"),
    (["detokenize", "2.9"], "token id 2.9"),
    (["detokenize", "[2.9]"], "token id 2.9"),
    (["detokenize", "[1e400]"], "token id"),
    (["detokenize", "--", "-1"], "token id -1"),
    (["detokenize", "99999999999"], "token id"),
]


@pytest.mark.parametrize("args,message", FLAG_ROWS, ids=[" ".join(a)[:60] for a, _ in FLAG_ROWS])
def test_flag_out_of_range_is_a_usage_error(bad, args, message):
    # A configured model that does not exist: had the command resolved or loaded a model before
    # checking its flags, the error would be "model not found" instead.
    bad.run(*args, expect=2, message=message, input="some text\n",
            env={"LLMCLI_MODEL": str(bad.work / "missing.gguf")})


CONFIG_ROWS = [
    ("threads = 99999999999999999999\n", "threads = 99999999999999999999"),  # aborted llama.cpp
    ("threads = 4294967296\n", "1..1024"),
    ("ctx = 1.9\n", "ctx = 1.9"),  # truncated to 1 before
    ("gpu_layers = -5\n", "gpu_layers"),
    ("[sampling]\ntop_k = 3.7\n", "top_k = 3.7"),
    ("[sampling]\nseed = 2.5\n", "seed = 2.5"),
    ("[sampling]\ntemperature = true\n", "temperature = true"),  # became 1.0 before
    ("[sampling]\nmax_tokens = false\n", "max_tokens = false"),
    ("[sampling]\nstop = \"abc\"\n", "stop"),
    ("[sampling]\nstop = [\"\"]\n", "stop"),
    ("model = \"\"\n", "model"),
    ("backend = 5\n", "backend"),
    ("device = \"tpu\"\n", "device"),
    ("think = \"loud\"\n", "think"),
    ("sampling = 3\n", "sampling"),
    ("temperature = 0.5\n", "under [sampling]"),
    ("[sampling]\nn = 2\n", "unknown sampling key 'n'"),
    ("threads = 1" + "0" * 5000 + "\n", "not valid TOML"),  # an integer Python will not convert
]


@pytest.mark.parametrize("text,message", CONFIG_ROWS, ids=[t[:40] for t, _ in CONFIG_ROWS])
def test_wrong_config_value_is_a_usage_error(bad, text, message):
    config = bad.work / "config.toml"
    config.write_text(text)
    r = bad.run("generate", "hi", expect=2, message=message, env={"LLMCLI_CONFIG": str(config)})
    assert str(config) in r.stderr


ENV_ROWS = [
    ("LLMCLI_TEMPERATURE", "nan"), ("LLMCLI_THREADS", "4294967296"), ("LLMCLI_SEED", "2.5"),
    ("LLMCLI_CTX", "abc"), ("LLMCLI_DEVICE", "tpu"), ("LLMCLI_TOP_K", "true"), ("LLMCLI_GPU_LAYERS", "-9"),
    ("LLMCLI_STOP", '[""]'), ("LLMCLI_BACKEND", "vllm"),
]


@pytest.mark.parametrize("var,value", ENV_ROWS)
def test_environment_error_names_the_variable(bad, var, value):
    bad.run("generate", "hi", expect=2, message=f"invalid {var}", env={var: value})


def test_llmcli_config_naming_a_missing_file_or_a_folder(bad):
    bad.run("generate", "hi", expect=1, message="does not exist", env={"LLMCLI_CONFIG": str(bad.work / "nope.toml")})
    (bad.work / "folder").mkdir()
    bad.run("generate", "hi", expect=1, message="not a file", env={"LLMCLI_CONFIG": str(bad.work / "folder")})


def _session(**changes) -> dict:
    doc = {"format": "llmcli-chat", "version": 1, "created": "2025-01-01T00:00:00+00:00",
           "updated": "2025-01-01T00:00:00+00:00", "model": None, "model_path": None, "system": None,
           "params": {"temperature": 0.0, "seed": 1}, "context_start": 0, "next_attempt": 0,
           "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    for key, value in changes.items():
        if key.startswith("params."):
            doc["params"][key[7:]] = value
        elif key.startswith("reply."):
            doc["messages"][1][key[6:]] = value
        else:
            doc[key] = value
    return doc


SESSION_ROWS = [
    ({"params.top_k": 1.5}, "top_k"),
    ({"params.seed": 1.5}, "seed"),
    ({"params.no_repeat_ngram_size": 2.5}, "no_repeat_ngram_size"),
    ({"params.stop": "abc"}, "stop"),  # became ["a", "b", "c"] before
    ({"params.max_tokens": True}, "max_tokens"),  # became 1 before
    ({"params.temperature": "hot"}, "temperature"),
    ({"reply.interrupted": "yes"}, "interrupted"),
    ({"reply.seed": 2**40}, "seed"),
    ({"reply.attempt": True}, "attempt"),
    ({"messages": [{"role": "system", "content": "x"}]}, "role"),
    ({"messages": [{"role": "user", "content": 5}]}, "content"),
    ({"context_start": -1}, "context_start"),
    ({"system": ["x"]}, "system"),
]


@pytest.mark.parametrize("changes,message", [r for r in SESSION_ROWS if r[1]],
                         ids=[next(iter(c)) for c, m in SESSION_ROWS if m])
def test_mistyped_session_is_reported_and_left_untouched(bad, isolated_dirs, changes, message):
    sessions = isolated_dirs / "data" / "sessions"
    sessions.mkdir(parents=True)
    path = sessions / "old.json"
    path.write_text(json.dumps(_session(**changes)))
    before = hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns
    r = bad.run("chat", "--continue", input="hello again\n", expect=1, message="is corrupt")
    assert message in r.stderr and str(path) in r.stderr
    assert (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns) == before


def test_session_path_in_the_working_folder_is_not_rewritten(bad):
    (bad.work / "s.json").write_text(json.dumps(_session(**{"params.top_k": 1.5})))
    bad.run("chat", "--session", str(bad.work / "s.json"), input="hi\n", expect=1, message="is corrupt")
