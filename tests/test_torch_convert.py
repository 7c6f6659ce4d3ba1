"""GGUF on torch: converted once, cached by the GGUF's identity, reused, listed and cleaned;
and the one-line errors of HF-folder loading through the real CLI."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest

from conftest import run_cli
from llmcli.backends.gguf_convert import (FORMAT_VERSION, MANIFEST, ensure_converted, gguf_identity,
                                          list_conversions, remove_conversions)


def test_first_conversion_says_so_and_second_open_is_cached(converted_gguf, gguf_path, torch_cache_dir):
    folder, messages = converted_gguf
    assert any(m.startswith("converting ") and gguf_path.name in m for m in messages)
    assert any(m.startswith("converted ") for m in messages)
    for name in ("config.json", "model.safetensors", "tokenizer.json", MANIFEST):
        assert (folder / name).is_file(), name
    again: list[str] = []
    t0 = time.perf_counter()
    assert ensure_converted(gguf_path, torch_cache_dir, notify=again.append) == folder
    assert time.perf_counter() - t0 < 2 and again == []


def test_copy_of_the_gguf_reuses_the_conversion(gguf_path, torch_cache_dir, converted_gguf, tmp_path):
    copy = tmp_path / "renamed-copy.gguf"
    os.link(gguf_path, copy) if os.stat(gguf_path).st_dev == os.stat(tmp_path).st_dev else shutil.copy(gguf_path,
                                                                                                            copy)
    said: list[str] = []
    assert ensure_converted(copy, torch_cache_dir, notify=said.append) == converted_gguf[0] and said == []
    # the manifest follows the path seen last, so deleting the original does not make it stale
    assert json.loads((converted_gguf[0] / MANIFEST).read_text())["source"] == str(copy.resolve())
    ensure_converted(gguf_path, torch_cache_dir, notify=said.append)
    assert json.loads((converted_gguf[0] / MANIFEST).read_text())["source"] == str(gguf_path.resolve())


def _fake_conversion(root, name, manifest):
    d = root / "converted" / name
    d.mkdir(parents=True)
    (d / "model.safetensors").write_bytes(b"x" * 1000)
    if manifest is not None:
        (d / MANIFEST).write_text(json.dumps(manifest))
    return d


def test_stale_conversions_are_listed_and_removed(gguf_path, tmp_path):
    cache = tmp_path / "cache"
    key = gguf_identity(gguf_path)
    ok = _fake_conversion(cache, "ok", {"format": FORMAT_VERSION, "source": str(gguf_path), "key": key})
    _fake_conversion(cache, "gone", {"format": FORMAT_VERSION, "source": str(tmp_path / "nope.gguf"), "key": key})
    _fake_conversion(cache, "changed", {"format": FORMAT_VERSION, "source": str(gguf_path), "key": "0" * 20})
    _fake_conversion(cache, "old", {"format": 0, "source": str(gguf_path), "key": key})
    _fake_conversion(cache, ".tmp-half-123", None)
    status = {c.path.name: c.status for c in list_conversions(cache)}
    assert status == {"ok": "ok", "gone": "stale: source GGUF is gone", "changed": "stale: source GGUF has changed",
                      "old": "stale: made by an older llmcli", ".tmp-half-123": "incomplete"}
    env = {"LLMCLI_CACHE_DIR": str(cache)}
    listed = json.loads(run_cli("cache", "list", "--json", env=env, check=True).stdout)
    assert {x["status"] for x in listed} == set(status.values())
    r = run_cli("cache", "clear", env=env, check=True)
    assert "removed 4 conversion(s)" in r.stderr
    assert [c.path for c in list_conversions(cache)] == [ok]
    assert remove_conversions(cache, everything=True)[0].path == ok and list_conversions(cache) == []


def test_cli_gguf_on_torch_opens_the_cached_conversion(gguf_path, torch_cache_dir, converted_gguf):
    r = run_cli("generate", "--backend", "torch", "-v", "-m", str(gguf_path), "--temperature", "0",
                "--max-tokens", "4", "--json", "Hi", env={"LLMCLI_CACHE_DIR": str(torch_cache_dir)}, check=True)
    assert "converting" not in r.stderr
    assert "backend: torch | device: cpu | dtype: float32" in r.stderr and "--backend torch was given" in r.stderr
    rec = json.loads(r.stdout)
    assert rec["backend"] == "torch" and rec["usage"]["completion_tokens"] >= 1


# --- bad HF folders through the CLI: one line, no traceback ------------------------------------------

def _one_line_error(r, code, needle):
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == code, r.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_folder_without_config_json(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 16)
    _one_line_error(run_cli("generate", "-m", str(tmp_path), "hi"), 1, "not a model folder")
    from llmcli.backends.torch import check_hf_folder
    from llmcli.errors import ModelError

    with pytest.raises(ModelError, match="no config.json"):
        check_hf_folder(tmp_path, allow_pickle=False)


def test_pickle_only_folder_is_refused_before_loading(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"not really a pickle")
    _one_line_error(run_cli("generate", "-m", str(tmp_path), "hi"), 1, "pickle")
    assert "--allow-pickle" in run_cli("generate", "-m", str(tmp_path), "hi").stderr


def test_unknown_architecture_and_remote_code(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 16)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "frobnicator-9000"}))
    _one_line_error(run_cli("generate", "-m", str(tmp_path), "hi"), 1, "does not know the model architecture")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "frobnicator-9000",
                                                      "auto_map": {"AutoConfig": "x.FrobConfig"}}))
    r = run_cli("generate", "-m", str(tmp_path), "hi")
    _one_line_error(r, 1, "needs its own Python code")
    assert "--trust-remote-code" in r.stderr


def test_encoder_only_model_via_cli(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 16)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertForMaskedLM"]}))
    _one_line_error(run_cli("generate", "-m", str(tmp_path), "hi"), 1, "not a text-generation model")


def test_device_cuda_without_cuda(hf_model_dir):
    _one_line_error(run_cli("generate", "-m", str(hf_model_dir), "--device", "cuda", "hi"), 1, "no CUDA GPU")
