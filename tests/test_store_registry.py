"""The local registry (names, aliases, default, last used) and the store commands that need no
hub: import, list, show, default, alias, rm, verify — through the real CLI where it matters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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


# ---------------------------------------------------------------- the schema (defect 3)

def _json_values():
    from hypothesis import strategies as st

    scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12)
    return st.recursive(scalars, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(
        st.text(max_size=8), kids, max_size=4), max_leaves=20)


def _registry_like():
    """Registry-shaped objects whose every field may be of any type: they reach the deep checks."""
    from hypothesis import strategies as st

    anything = _json_values()
    field = st.sampled_from(["kind", "source", "format", "path", "files", "size", "quant", "license", "repo",
                             "revision", "commit", "spec", "added", "last_used"])
    good = {"kind": st.sampled_from(["imported", "pulled", "remote", "x"]), "format": st.sampled_from(["gguf", "hf"]),
            "path": st.sampled_from(["/m.gguf", "", "/a\x00b"]), "size": st.integers(-2, 5),
            "files": st.lists(st.fixed_dictionaries({"name": st.just("m"), "path": st.just("/m"),
                                                     "size": st.integers(-1, 3)}), max_size=2),
            "added": st.sampled_from(["2026-01-31T12:00:00Z", "2026-02-31T12:00:00Z", "yesterday"])}
    record = st.fixed_dictionaries({k: v for k, v in good.items()},
                                   optional={"repo": anything, "revision": anything, "commit": st.text(max_size=3)}) | \
        st.dictionaries(field, anything, max_size=6)
    names = st.sampled_from(["m", "x", "../up", "a.gguf", "ok:1"])
    return st.fixed_dictionaries({"models": st.dictionaries(names, record, max_size=3)}, optional={
        "version": st.sampled_from([1, 2, 3, True, "2"]), "default": names | anything,
        "aliases": st.dictionaries(names, names | anything, max_size=2) | anything})


@pytest.mark.parametrize("kind", ["bytes", "json", "registry-like"])
def test_registry_loader_property(kind):
    """Any bytes, any JSON, any registry-shaped object: a valid Registry that round-trips, or the
    documented damaged-registry error — never another exception."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from llmcli.store.records import Damaged, Registry, parse_registry

    strategy = {"bytes": st.binary(max_size=200),
                "json": _json_values().map(lambda v: json.dumps(v).encode()),
                "registry-like": _registry_like().map(lambda v: json.dumps(v).encode())}[kind]
    outcomes = {"valid": 0, "damaged": 0}

    @settings(max_examples=400, deadline=None, database=None)
    @given(strategy)
    def check(raw):
        try:
            reg = parse_registry(raw)
        except Damaged as e:
            assert str(e)
            outcomes["damaged"] += 1
            return
        assert isinstance(reg, Registry)
        assert parse_registry(registry._encode(reg)) == reg
        outcomes["valid"] += 1

    check()
    assert outcomes["damaged"] > 0
    if kind == "registry-like":
        assert outcomes["valid"] > 0, outcomes


def test_damaged_registry_error_comes_from_the_file(isolated_dirs):
    path = registry.registry_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b'{"models": {"x": {"kind": "imported"}}}')
    with pytest.raises(StoreError, match=r"registry .* is damaged \(models\['x'\]\.format"):
        registry.load()


def test_version_1_registry_is_read_and_not_rewritten_by_a_read(gguf_path, isolated_dirs):
    path = registry.registry_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    v1 = {"version": 1, "default": "old", "aliases": {"o": "old"}, "models": {"old": {
        "name": "old", "source": "import", "format": "gguf", "path": str(gguf_path), "quant": "Q4_1",
        "license": None, "files": [{"name": gguf_path.name, "path": str(gguf_path), "size": 1}], "size": 1,
        "added": "2026-01-01T00:00:00Z", "last_used": None}}}
    path.write_text(json.dumps(v1))
    before = path.read_bytes()
    r = run_cli("models", "list")
    assert r.returncode == 0 and "old *" in r.stdout and "alias o -> old" in r.stdout, r.stderr
    assert run_cli("models", "show", "o").returncode == 0
    assert path.read_bytes() == before
    assert run_cli("models", "alias", "p", "old").returncode == 0  # the first change writes version 2
    data = json.loads(path.read_text())
    assert data["version"] == 2 and data["models"]["old"]["kind"] == "imported"
    assert data["models"]["old"]["added"] == "2026-01-01T00:00:00Z"


def test_damaged_registry_never_blocks_a_path_or_the_embedded_model(gguf_path, isolated_dirs):
    path = registry.registry_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b'{"version": 2, "default": 5, "models": {}, "aliases": {}}')
    before = path.read_bytes()
    r = run_cli("generate", "-m", str(gguf_path), "Hi", "--max-tokens", "2", "--temperature", "0")
    assert r.returncode == 0 and r.stdout.strip() and r.stderr == "", r.stderr
    r = run_cli("generate", "Hi", "--max-tokens", "2", "--temperature", "0")  # no -m: the embedded model
    assert r.returncode == 0 and r.stdout.strip(), r.stderr
    assert r.stderr.startswith("warning: the model registry") and "using the embedded model" in r.stderr
    r = run_cli("tokenize", "-m", str(gguf_path), "Hi")
    assert r.returncode == 0, r.stderr
    r = run_cli("models", "show", str(gguf_path))
    assert r.returncode == 0 and "architecture:" in r.stdout, r.stderr
    assert path.read_bytes() == before


# ---------------------------------------------------------------- permissions (defect 7)

def test_read_only_data_dir_says_permission_denied(tmp_path, isolated_dirs):
    """chmod 555 stops only a process without CAP_DAC_OVERRIDE: as root, the CLI runs with that
    capability dropped from its bounding set (setpriv), which is what a normal user has."""
    import shutil

    prefix = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root and setpriv is missing: chmod 555 cannot be provoked")
        prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]
    data = tmp_path / "data"
    data.mkdir()
    f = tiny_gguf(tmp_path / "m.gguf")
    os.chmod(data, 0o555)
    try:
        env = dict(os.environ, LLMCLI_DATA_DIR=str(data))
        for args in (("models", "import", str(f), "--as", "m"), ("models", "default", "--unset")):
            proc = subprocess.run([*prefix, sys.executable, "-m", "llmcli", *args], env=env, capture_output=True,
                                  text=True, timeout=60)
            assert proc.returncode == 1, proc.stderr
            assert proc.stderr.startswith(f"error: cannot write the model registry {data / 'registry.json'}: "
                                          "Permission denied"), proc.stderr
            assert proc.stderr.count("\n") == 1 and proc.stdout == ""
        assert os.listdir(data) == []
    finally:
        os.chmod(data, 0o755)


# ---------------------------------------------------------------- display and flags

def test_last_used_display_is_right_under_daylight_saving(gguf_path):
    """A time zone whose daylight saving is on all year: the old mktime-based display was 1 h off."""
    from datetime import datetime, timedelta, timezone

    assert run_cli("models", "import", str(gguf_path), "--as", "mine").returncode == 0
    path = registry.registry_path()
    data = json.loads(path.read_text())
    then = datetime.now(timezone.utc) - timedelta(minutes=30)
    data["models"]["mine"]["last_used"] = then.strftime("%Y-%m-%dT%H:%M:%SZ")
    path.write_text(json.dumps(data))
    for tz in ("EST+5EDT,0/0,J365/25", "UTC0", "Australia/Sydney"):
        r = run_cli("models", "list", env={"TZ": tz})
        assert r.returncode == 0, r.stderr
        assert "30 min ago" in r.stdout or "31 min ago" in r.stdout, (tz, r.stdout)


@pytest.mark.parametrize("command", ["generate", "tokenize", "detokenize", "chat", "perplexity", "bench", "pull",
                                     "cache list", "cache clear", "models list", "models show", "models rm",
                                     "models import", "models default", "models alias", "models verify",
                                     "models prune", "models pull"])
def test_every_command_takes_verbose(command):
    r = run_cli(*command.split(), "--help")
    assert r.returncode == 0 and "-v, --verbose" in r.stdout, r.stdout
