"""llmcli.fileio: the one safe-write module. Own-folder writes are atomic and keep modes; user
paths are never clobbered; every failure is one WriteError line."""

from __future__ import annotations

import os
import stat

import pytest

from llmcli.fileio import FileKind, WriteError, atomic_write, write_user_file

OURS = FileKind("test file", lambda data: data.startswith(b"OURS"), "force it")


def mode(p) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def leftovers(folder) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_atomic_write_creates_folders_and_new_files_are_private(tmp_path):
    p = tmp_path / "a" / "b" / "registry.json"
    atomic_write(p, "{}")
    assert p.read_text() == "{}" and mode(p) == 0o600 and not leftovers(p.parent)


def test_atomic_rewrite_keeps_the_mode(tmp_path):
    p = tmp_path / "registry.json"
    p.write_text("old")
    p.chmod(0o640)
    atomic_write(p, b"new")
    assert p.read_text() == "new" and mode(p) == 0o640


def test_read_only_own_file_is_left_alone(tmp_path):
    p = tmp_path / "registry.json"
    p.write_text("old")
    p.chmod(0o444)
    with pytest.raises(WriteError, match="read-only") as e:
        atomic_write(p, "new", what="the model registry")
    assert e.value.message.startswith(f"cannot write the model registry {p}") and "chmod u+w" in e.value.hint
    assert p.read_text() == "old" and mode(p) == 0o444 and not leftovers(tmp_path)


def test_own_file_symlink_is_written_through(tmp_path):
    real = tmp_path / "dotfiles" / "registry.json"
    real.parent.mkdir()
    real.write_text("old")
    link = tmp_path / "registry.json"
    link.symlink_to(real)
    atomic_write(link, "new")
    assert link.is_symlink() and real.read_text() == "new"


@pytest.mark.parametrize("blocker", ["file", "dir"])
def test_folder_path_through_a_file_or_a_folder_target(tmp_path, blocker):
    if blocker == "file":
        (tmp_path / "data").write_text("x")
        target, needle = tmp_path / "data" / "sessions" / "s.json", "not a folder"
    else:
        (tmp_path / "registry.json").mkdir()
        target, needle = tmp_path / "registry.json", "directory"
    with pytest.raises(WriteError, match=needle):
        atomic_write(target, "x")


def test_user_file_rules(tmp_path):
    theirs = tmp_path / "theirs.txt"
    theirs.write_text("precious")
    with pytest.raises(WriteError, match="not an llmcli test file") as e:
        write_user_file(theirs, "OURS 1", force=False, kind=OURS)
    assert e.value.hint == "force it" and theirs.read_text() == "precious"
    write_user_file(theirs, "OURS 1", force=True, kind=OURS)
    assert theirs.read_text() == "OURS 1"
    write_user_file(theirs, "OURS 2", force=False, kind=OURS)  # now it is ours
    assert theirs.read_text() == "OURS 2" and not leftovers(tmp_path)


def test_new_user_file_gets_the_umask_mode(tmp_path):
    old = os.umask(0o027)
    try:
        write_user_file(tmp_path / "new.md", "OURS", force=False, kind=OURS)
    finally:
        os.umask(old)
    assert mode(tmp_path / "new.md") == 0o640


@pytest.mark.parametrize("make,needle", [
    (lambda p: p.symlink_to(p.parent / "elsewhere"), "symbolic link"),  # dangling: still refused
    (lambda p: p.mkdir(), "directory"),
    (lambda p: os.mkfifo(p), "FIFO"),
])
def test_user_path_special_files_are_refused_even_with_force(tmp_path, make, needle):
    p = tmp_path / "target"
    make(p)
    with pytest.raises(WriteError, match=needle):
        write_user_file(p, "OURS", force=True, kind=OURS)
    assert not (tmp_path / "elsewhere").exists() and not leftovers(tmp_path)


def test_user_path_creates_no_folder(tmp_path):
    with pytest.raises(WriteError, match="does not exist"):
        write_user_file(tmp_path / "no" / "x.json", "OURS", force=True, kind=OURS)
    assert not (tmp_path / "no").exists()


def test_disk_full_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch):
    p = tmp_path / "x.json"
    p.write_text("OURS old")

    def full(*_a):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(WriteError, match="No space left on device") as e:
        write_user_file(p, "OURS new", force=False, kind=OURS)
    assert e.value.hint == "free some disk space" and p.read_text() == "OURS old" and not leftovers(tmp_path)
