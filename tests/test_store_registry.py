"""The local registry (names, aliases, default, last used) and the store commands that need no
hub: import, list, show, default, alias, rm, verify — through the real CLI where it matters."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import run_cli
from ggufs import tiny_gguf
from llmcli.errors import StoreError, UsageError
from llmcli.store import registry
from llmcli.store.modelstore import ModelStore


def store() -> ModelStore:
    return ModelStore()


def registered() -> dict:
    return {n: r.to_json() for n, r in store().snapshot().models.items()}


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
    f = tiny_gguf(tmp_path / "m.gguf")
    rec = store().import_model(str(f), "mine")
    assert rec.kind == "imported" and rec.path == str(f) and rec.added and rec.last_used is None
    ref = store().lookup("mine")
    assert ref.path == f and ref.format == "gguf" and ref.origin == "store" and ref.name == "mine"
    assert store().lookup("MINE").path == f  # case-insensitive when unambiguous
    assert store().lookup("other") is None
    store().set_alias("m", "mine")
    assert store().lookup("m").path == f
    assert store().default_ref() is None
    store().set_default("m")  # an alias resolves to its model
    assert store().default_name() == "mine" and store().default_ref().path == f
    store().touch("m")
    assert store().snapshot().models["mine"].last_used
    with pytest.raises(StoreError):
        store().import_model(str(f), "m")  # an alias is not free
    with pytest.raises(StoreError):
        store().import_model(str(tiny_gguf(tmp_path / "other.gguf")), "mine")  # another source, a taken name
    gone = store().remove("mine")
    assert gone.kind == "model" and gone.record.path == str(f) and gone.freed == 0
    reg = store().snapshot()
    assert dict(reg.models) == {} and dict(reg.aliases) == {} and reg.default is None
    assert f.exists()


def test_records_are_frozen(tmp_path):
    import dataclasses

    rec = store().import_model(str(tiny_gguf(tmp_path / "m.gguf")), "mine")
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec.path = "/elsewhere"


def test_lookup_of_vanished_files_says_so(tmp_path):
    from llmcli.errors import ModelError

    f = tiny_gguf(tmp_path / "gone.gguf")
    store().import_model(str(f), "gone")
    f.unlink()
    with pytest.raises(ModelError, match="files are gone"):
        store().lookup("gone")


def test_registry_survives_a_crash_between_write_and_rename(tmp_path, isolated_dirs):
    f = tiny_gguf(tmp_path / "m.gguf")
    store().import_model(str(f), "first")
    before = registry.registry_path().read_bytes()
    # A real process dies after writing + fsyncing the temporary file, before the rename.
    code = ("import os, sys\n"
            "from llmcli.store.modelstore import ModelStore\n"
            "os.replace = lambda *a, **k: os._exit(9)\n"
            f"ModelStore().import_model({str(f)!r}, 'second')\n")
    proc = subprocess.run([sys.executable, "-c", code], env=dict(os.environ), capture_output=True)
    assert proc.returncode == 9
    assert registry.registry_path().read_bytes() == before
    assert set(registry.load().models) == {"first"}
    leftovers = list(registry.registry_path().parent.glob(".registry.json.*.tmp"))
    assert leftovers, "the crash should have left its temporary file behind"
    # Reads and writes go on normally, and prune sweeps the leftover.
    store().import_model(str(tiny_gguf(tmp_path / "third.gguf")), "third")
    assert set(registry.load().models) == {"first", "third"}
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
    f = tiny_gguf(tmp_path / "m.gguf")
    code = ("import sys\nfrom llmcli.store.modelstore import ModelStore\n"
            "for i in range(15):\n"
            f"    ModelStore().import_model({str(f)!r}, f'p{{sys.argv[1]}}-{{i}}')\n"
            "    ModelStore().touch(f'p{sys.argv[1]}-0')\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(k)], env=dict(os.environ)) for k in range(4)]
    assert [p.wait(60) for p in procs] == [0, 0, 0, 0]
    assert len(registry.load().models) == 60


# ---------------------------------------------------------------- CLI round trips

def test_import_list_show_default_alias_rm(gguf_path):
    r = run_cli("models", "import", str(gguf_path), "--as", "mine")
    assert r.returncode == 0, r.stderr
    assert "not copied" in r.stderr
    rec = registered()["mine"]
    assert rec["path"] == str(gguf_path) and rec["kind"] == "imported" and rec["format"] == "gguf"

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
    assert "mine" in registered()
    # rm of an alias removes only the alias.
    assert run_cli("models", "rm", "m", "--yes").returncode == 0
    assert dict(registry.load().aliases) == {} and "mine" in registered()
    r = run_cli("models", "rm", "mine", "--yes")
    assert r.returncode == 0 and "imported files kept" in r.stderr
    assert gguf_path.exists()  # an imported model's file is never deleted
    assert registered() == {} and registry.load().default is None


def test_store_default_and_name_work_for_generate(gguf_path):
    assert run_cli("models", "import", str(gguf_path), "--as", "mine").returncode == 0
    r = run_cli("generate", "-m", "mine", "Hello", "--max-tokens", "3", "--temperature", "0")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()
    assert registered()["mine"]["last_used"]


def test_path_traversal_names_are_rejected(gguf_path):
    store().import_model(str(gguf_path), "mine")
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
        store().set_alias("a\x00b", "x")
    assert store().lookup("a\x00b") is None


def test_import_hf_folder_and_unknown_names(tmp_path):
    folder = tmp_path / "hfmodel"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 2,
                                                    "num_attention_heads": 4, "hidden_size": 64,
                                                    "max_position_embeddings": 256}))
    r = run_cli("models", "import", str(folder))
    assert r.returncode == 0, r.stderr
    assert registered()["hfmodel"]["format"] == "hf"
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
    assert child.exitstatus == 1 and "mine" in registered()
    child = pexpect.spawn(sys.executable, ["-m", "llmcli", "models", "rm", "mine"], env=dict(os.environ),
                          timeout=30)
    child.expect(r"Remove\?")
    child.sendline("y")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0 and registered() == {}


def test_import_split_gguf_registers_all_parts(tmp_path):
    for i in (1, 2):
        tiny_gguf(tmp_path / f"big-Q8_0-0000{i}-of-00002.gguf")
    r = run_cli("models", "import", str(tmp_path / "big-Q8_0-00001-of-00002.gguf"))
    assert r.returncode == 0, r.stderr
    rec = registered()["big-Q8_0"]
    assert [f["name"] for f in rec["files"]] == ["big-Q8_0-00001-of-00002.gguf", "big-Q8_0-00002-of-00002.gguf"]
    assert rec["quant"] == "Q8_0" and rec["size"] == 2 * (tmp_path / "big-Q8_0-00001-of-00002.gguf").stat().st_size
    r = run_cli("models", "import", str(tmp_path / "big-Q8_0-00002-of-00002.gguf"), "--as", "x")
    assert r.returncode == 2 and "first part" in r.stderr
