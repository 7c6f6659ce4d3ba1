"""The local registry (names, aliases, default, last used) and the store commands that need no
hub: import, list, show, default, alias, rm, verify — through the real CLI where it matters."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import run_cli
from llmcli.errors import StoreError, UsageError
from llmcli.store import registry


def _rec(path, fmt="gguf", source="import"):
    return {"source": source, "format": fmt, "path": str(path), "files": [{"name": "m", "path": str(path),
                                                                           "size": 1}], "size": 1}


@pytest.mark.parametrize("name", ["smol", "qwen2.5:7b", "TestOrg/SmolLM2-GGUF:Q4_K_M", "a@v1.0", "m+x", "A-b_c.d"])
def test_valid_names(name):
    assert registry.validate_name(name) == name


@pytest.mark.parametrize("name", ["", "../evil", "a/../../b", "/etc/passwd", "~/x", "./x", ".hidden", "a//b",
                                  "a/./b", "nul\x00byte", "C:\\x", "back\\slash", "my.gguf", "sp ace",
                                  "tab\tname", "x" * 201, "-flag", "a/"])
def test_invalid_names(name):
    with pytest.raises(UsageError):
        registry.validate_name(name)


def test_register_lookup_alias_default_remove(tmp_path):
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF" + bytes(60))
    registry.register("mine", _rec(f))
    ref = registry.lookup("mine")
    assert ref.path == f and ref.format == "gguf" and ref.origin == "store" and ref.name == "mine"
    assert registry.lookup("MINE").path == f  # case-insensitive when unambiguous
    assert registry.lookup("other") is None
    registry.set_alias("m", "mine")
    assert registry.lookup("m").path == f
    assert registry.default_ref() is None
    registry.set_default("m")  # an alias resolves to its model
    assert registry.default_name() == "mine" and registry.default_ref().path == f
    registry.touch_last_used("m")
    assert registry.load()["models"]["mine"]["last_used"]
    with pytest.raises(StoreError):
        registry.register("m", _rec(f))  # an alias is not free
    with pytest.raises(StoreError):
        registry.register("mine", _rec(tmp_path / "other.gguf"))  # another source under a taken name
    kind, rec, others = registry.remove("mine")
    assert kind == "model" and rec["path"] == str(f) and others == []
    data = registry.load()
    assert data["models"] == {} and data["aliases"] == {} and data["default"] is None
    assert f.exists()


def test_lookup_of_vanished_files_says_so(tmp_path):
    from llmcli.errors import ModelError

    f = tmp_path / "gone.gguf"
    f.write_bytes(b"GGUF")
    registry.register("gone", _rec(f))
    f.unlink()
    with pytest.raises(ModelError, match="files are gone"):
        registry.lookup("gone")


def test_registry_survives_a_crash_between_write_and_rename(tmp_path, isolated_dirs):
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF")
    registry.register("first", _rec(f))
    before = registry.registry_path().read_bytes()
    # A real process dies after writing + fsyncing the temporary file, before the rename.
    code = ("import os, sys\n"
            "from llmcli.store import registry\n"
            "os.replace = lambda *a, **k: os._exit(9)\n"
            f"registry.register('second', {_rec(f)!r})\n")
    proc = subprocess.run([sys.executable, "-c", code], env=dict(os.environ), capture_output=True)
    assert proc.returncode == 9
    assert registry.registry_path().read_bytes() == before
    assert set(registry.load()["models"]) == {"first"}
    leftovers = list(registry.registry_path().parent.glob(".registry.json.*.tmp"))
    assert leftovers, "the crash should have left its temporary file behind"
    # Reads and writes go on normally, and prune sweeps the leftover.
    registry.register("third", _rec(f))
    assert set(registry.load()["models"]) == {"first", "third"}
    r = run_cli("models", "prune")
    assert r.returncode == 0, r.stderr
    assert not list(registry.registry_path().parent.glob(".registry.json.*.tmp"))


def test_damaged_registry_is_a_one_line_error(isolated_dirs):
    path = registry.registry_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"models": {"half": ')
    r = run_cli("models", "list")
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "registry" in r.stderr and "damaged" in r.stderr


def test_concurrent_writers_lose_nothing(tmp_path):
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF")
    code = ("import sys\nfrom llmcli.store import registry\n"
            "for i in range(15):\n"
            f"    registry.register(f'p{{sys.argv[1]}}-{{i}}', {_rec(f)!r})\n"
            "    registry.touch_last_used(f'p{sys.argv[1]}-0')\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(k)], env=dict(os.environ)) for k in range(4)]
    assert [p.wait(60) for p in procs] == [0, 0, 0, 0]
    assert len(registry.load()["models"]) == 60


# ---------------------------------------------------------------- CLI round trips

def test_import_list_show_default_alias_rm(gguf_path):
    r = run_cli("models", "import", str(gguf_path), "--as", "mine")
    assert r.returncode == 0, r.stderr
    assert "not copied" in r.stderr
    rec = registry.load()["models"]["mine"]
    assert rec["path"] == str(gguf_path) and rec["source"] == "import" and rec["format"] == "gguf"

    r = run_cli("models", "list")
    assert r.returncode == 0 and "mine" in r.stdout and "import:" in r.stdout and "never" in r.stdout
    listed = json.loads(run_cli("models", "list", "--json").stdout)
    assert [m["name"] for m in listed["models"]] == ["mine"]
    assert listed["models"][0]["format"] == "gguf" and listed["models"][0]["size"] == gguf_path.stat().st_size

    r = run_cli("models", "show", "mine")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for expected in ("architecture:", "llama", "134.5M", "context length: 8192", "Q4_1", "chat template:  yes",
                     "<|im_start|>", "apache-2.0", str(gguf_path), "4096 tokens", "8192 tokens"):
        assert expected in out, (expected, out)
    meta = json.loads(run_cli("models", "show", "mine", "--json").stdout)["metadata"]
    assert meta["parameters"] == 134515008 and meta["context_length"] == 8192 and meta["has_chat_template"]
    mem = meta["memory"]
    assert mem["weights_bytes"] == gguf_path.stat().st_size
    assert mem["kv_bytes_per_token"] == 30 * 3 * (64 + 64) * 2
    assert mem["max_total_bytes"] > mem["default_total_bytes"] > mem["weights_bytes"]

    assert run_cli("models", "alias", "m", "mine").returncode == 0
    assert run_cli("models", "default", "m").returncode == 0
    assert run_cli("models", "default").stdout.strip() == "mine"
    r = run_cli("models", "list")
    assert "mine *" in r.stdout and "alias m -> mine" in r.stdout

    # rm without a terminal and without --yes refuses, changing nothing.
    r = run_cli("models", "rm", "mine")
    assert r.returncode == 2 and "--yes" in r.stderr
    assert "mine" in registry.load()["models"]
    # rm of an alias removes only the alias.
    assert run_cli("models", "rm", "m", "--yes").returncode == 0
    assert registry.load()["aliases"] == {} and "mine" in registry.load()["models"]
    r = run_cli("models", "rm", "mine", "--yes")
    assert r.returncode == 0 and "imported files kept" in r.stderr
    assert gguf_path.exists()  # an imported model's file is never deleted
    assert registry.load()["models"] == {} and registry.load()["default"] is None


def test_store_default_and_name_work_for_generate(gguf_path):
    assert run_cli("models", "import", str(gguf_path), "--as", "mine").returncode == 0
    r = run_cli("generate", "-m", "mine", "Hello", "--max-tokens", "3", "--temperature", "0")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()
    assert registry.load()["models"]["mine"]["last_used"]


def test_path_traversal_names_are_rejected(gguf_path):
    registry.register("mine", _rec(gguf_path))
    before = registry.registry_path().read_bytes()
    for args in (("models", "import", str(gguf_path), "--as", "../evil"),
                 ("models", "import", str(gguf_path), "--as", "/tmp/evil"),
                 ("models", "import", str(gguf_path), "--as", "evil.gguf"),
                 ("models", "alias", "a/../../b", "mine"),
                 ("pull", "TestOrg/X:Q4_K_M", "--as", "../../etc/x")):
        r = run_cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
        assert registry.registry_path().read_bytes() == before


def test_nul_byte_name_rejected_in_process():
    with pytest.raises(UsageError):
        registry.set_alias("a\x00b", "x")
    assert registry.lookup("a\x00b") is None


def test_import_hf_folder_and_unknown_names(tmp_path):
    folder = tmp_path / "hfmodel"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 2,
                                                    "num_attention_heads": 4, "hidden_size": 64,
                                                    "max_position_embeddings": 256}))
    r = run_cli("models", "import", str(folder))
    assert r.returncode == 0, r.stderr
    assert registry.load()["models"]["hfmodel"]["format"] == "hf"
    r = run_cli("models", "show", "hfmodel")
    assert r.returncode == 0 and "context length: 256" in r.stdout
    for args in (("models", "show", "nope"), ("models", "rm", "nope", "--yes"), ("models", "default", "nope"),
                 ("models", "alias", "x", "nope"), ("models", "verify", "nope")):
        r = run_cli(*args)
        assert r.returncode == 1 and "no model named 'nope'" in r.stderr and "models list" in r.stderr, args
    r = run_cli("models", "import", str(tmp_path / "missing.gguf"))
    assert r.returncode == 1 and "not found" in r.stderr


def test_verify_imported_model_prints_hash(gguf_path):
    assert run_cli("models", "import", str(gguf_path), "--as", "mine").returncode == 0
    r = run_cli("models", "verify", "mine")
    assert r.returncode == 0 and "unverifiable" in r.stdout and "no hub hashes" in r.stderr


def test_rm_asks_on_a_terminal(gguf_path):
    pexpect = pytest.importorskip("pexpect")
    assert run_cli("models", "import", str(gguf_path), "--as", "mine").returncode == 0
    child = pexpect.spawn(sys.executable, ["-m", "llmcli", "models", "rm", "mine"], env=dict(os.environ),
                          timeout=30)
    child.expect(r"Remove\?")
    child.sendline("n")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1 and "mine" in registry.load()["models"]
    child = pexpect.spawn(sys.executable, ["-m", "llmcli", "models", "rm", "mine"], env=dict(os.environ),
                          timeout=30)
    child.expect(r"Remove\?")
    child.sendline("y")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0 and registry.load()["models"] == {}


def test_import_split_gguf_registers_all_parts(tmp_path):
    for i in (1, 2):
        (tmp_path / f"big-Q8_0-0000{i}-of-00002.gguf").write_bytes(b"GGUF" + bytes(60))
    r = run_cli("models", "import", str(tmp_path / "big-Q8_0-00001-of-00002.gguf"))
    assert r.returncode == 0, r.stderr
    rec = registry.load()["models"]["big-Q8_0"]
    assert [f["name"] for f in rec["files"]] == ["big-Q8_0-00001-of-00002.gguf", "big-Q8_0-00002-of-00002.gguf"]
    assert rec["quant"] == "Q8_0" and rec["size"] == 128
    r = run_cli("models", "import", str(tmp_path / "big-Q8_0-00002-of-00002.gguf"), "--as", "x")
    assert r.returncode == 2 and "first part" in r.stderr
