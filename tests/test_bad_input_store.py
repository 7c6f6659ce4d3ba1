"""Bad-input rows for the model store (issue 10: defects 3, 7, 8 and the store decisions), each a
real subprocess through the ``bad`` harness: the exit status, one ``error:`` line, no traceback,
nothing on stdout, and no file in the user's folder changed.

The registry lives *inside* ``bad.work`` here (LLMCLI_DATA_DIR), so the harness also proves that
a damaged registry is never rewritten by a command that reads it, and that no lock file is left.
"""

from __future__ import annotations

import os

import pytest

from ggufs import huge_counts, tiny_gguf, truncated

DAMAGED = {
    "default-5": b'{"version": 2, "default": 5, "models": {}, "aliases": {}}',
    "aliases-list": b'{"version": 2, "default": null, "models": {}, "aliases": []}',
    "model-5": b'{"version": 2, "models": {"x": 5}}',
    "no-path": (b'{"version": 2, "models": {"x": {"kind": "imported", "format": "gguf", "files": [], '
                b'"size": 0}}}'),
    "not-utf8": b'{"version": 2, "models": {"\xff\xfe": 1}}',
    "half-json": b'{"models": {"half": ',
    "alias-to-nothing": b'{"version": 2, "models": {}, "aliases": {"a": "gone"}}',
    "newer-version": b'{"version": 99, "models": {}}',
}


@pytest.fixture
def damaged(bad, request):
    data = bad.work / "data"
    data.mkdir()
    (data / "registry.json").write_bytes(DAMAGED[request.param])
    # The run log (logs.db) lives in the data dir too; a failed run is logged, which is not what
    # these rows are about: only the registry must stay untouched.
    return {"LLMCLI_DATA_DIR": str(data), "LLMCLI_LOG": "0"}


@pytest.mark.parametrize("damaged", list(DAMAGED), indirect=True)
def test_damaged_registry_list(bad, damaged):
    bad.run("models", "list", expect=1, env=damaged, message="is damaged")


@pytest.mark.parametrize("damaged", ["default-5", "model-5", "no-path", "not-utf8"], indirect=True)
def test_damaged_registry_store_name(bad, damaged):
    bad.run("generate", "-m", "x", "hi", "--max-tokens", "1", expect=1, env=damaged, message="is damaged")


@pytest.mark.parametrize("damaged", ["default-5", "aliases-list", "no-path"], indirect=True)
def test_damaged_registry_import_changes_nothing(bad, damaged):
    f = tiny_gguf(bad.work / "m.gguf")
    bad.run("models", "import", str(f), "--as", "y", expect=1, env=damaged, message="is damaged")


@pytest.mark.parametrize("damaged", ["aliases-list", "model-5"], indirect=True)
@pytest.mark.parametrize("args", [("models", "alias", "a", "x"), ("models", "default"), ("models", "rm", "x", "-y"),
                                  ("models", "show", "x")])
def test_damaged_registry_other_commands(bad, damaged, args):
    bad.run(*args, expect=1, env=damaged, message="is damaged")


# ---------------------------------------------------------------- an unwritable data dir (defect 7)
# A data dir that is a file is what root can provoke too (chmod 555 does not stop root; the
# Permission-denied case runs as another user in test_store_registry.py).

@pytest.mark.parametrize("args", [("models", "import", "{gguf}"), ("models", "alias", "a", "x"),
                                  ("models", "rm", "x", "-y"), ("models", "default", "x")])
def test_data_dir_is_a_file(bad, args):
    (bad.work / "afile").write_text("not a folder\n")
    f = tiny_gguf(bad.work / "m.gguf")
    args = [a.replace("{gguf}", str(f)) for a in args]
    r = bad.run(*args, expect=1, env={"LLMCLI_DATA_DIR": str(bad.work / "afile" / "data")},
                message="cannot write the model registry")
    assert "Not a directory" in r.stderr and "LLMCLI_DATA_DIR" in r.stderr


def test_data_dir_is_a_file_for_list(bad):
    (bad.work / "afile").write_text("not a folder\n")
    bad.run("models", "list", expect=1, env={"LLMCLI_DATA_DIR": str(bad.work / "afile")},
            message="cannot read the model registry")


# ---------------------------------------------------------------- hostile GGUF headers (defect 8, decisions)

@pytest.mark.parametrize("counts", [dict(tensors=2**62), dict(kv=2**62), dict(tensors=2**64 - 1, kv=2**64 - 1)])
@pytest.mark.parametrize("command", ["show", "import"])
def test_gguf_header_with_impossible_counts(bad, counts, command):
    f = huge_counts(bad.work / "huge.gguf", **counts)
    bad.run("models", command, str(f), expect=1, message="damaged GGUF header")


@pytest.mark.parametrize("args", [("generate", "-m", "huge.gguf", "hi"), ("tokenize", "-m", "huge.gguf", "hi")])
def test_impossible_counts_share_the_check_with_generate(bad, args):
    huge_counts(bad.work / "huge.gguf", tensors=2**62)
    bad.run(*args, expect=1, message="damaged GGUF header")


@pytest.mark.parametrize("command", ["show", "import"])
def test_truncated_gguf_is_refused(bad, gguf_path, command):
    f = truncated(gguf_path, bad.work / "cut.gguf")
    r = bad.run("models", command, str(f), expect=1, message="is truncated")
    assert str(gguf_path.stat().st_size) in r.stderr  # the size the header describes


def test_file_that_only_starts_with_gguf_is_not_imported(bad):
    (bad.work / "fake.gguf").write_bytes(b"GGUF" + os.urandom(4096))
    bad.run("models", "import", str(bad.work / "fake.gguf"), expect=1, message="GGUF")


# ---------------------------------------------------------------- paths that exist but are no model files

@pytest.mark.parametrize("args", [("generate", "-m", "{p}", "hi"), ("tokenize", "-m", "{p}", "hi"),
                                  ("models", "show", "{p}"), ("models", "import", "{p}")])
def test_fifo_as_model_says_fifo_without_blocking(bad, args):
    os.mkfifo(bad.work / "pipe.gguf")
    args = [a.replace("{p}", "pipe.gguf") for a in args]
    bad.run(*args, expect=1, message="is a FIFO (named pipe), not a model file", timeout=60)


@pytest.mark.parametrize("args", [("generate", "-m", "{p}", "hi"), ("models", "show", "{p}"),
                                  ("models", "import", "{p}")])
def test_symlink_loop_as_model(bad, args):
    os.symlink("loop-b", bad.work / "loop-a")
    os.symlink("loop-a", bad.work / "loop-b")
    args = [a.replace("{p}", "loop-a") for a in args]
    bad.run(*args, expect=1, message="symlink loop")


def test_broken_symlink_as_model(bad):
    os.symlink("gone.gguf", bad.work / "dangling")
    bad.run("generate", "-m", "dangling", "hi", expect=1, message="broken symlink")


def test_models_show_accepts_verbose(bad):
    """The error hint says -v; `models show -v` accepts it and adds the traceback (so not a harness row)."""
    from conftest import run_cli

    f = huge_counts(bad.work / "huge.gguf", tensors=2**62)
    r = run_cli("models", "show", "-v", str(f))
    assert r.returncode == 1 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "damaged GGUF header" in lines[-1], r.stderr
    assert "Traceback" in r.stderr and "No such option" not in r.stderr
