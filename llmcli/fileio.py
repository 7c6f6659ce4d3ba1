"""Every file llmcli writes goes through here.

Two functions, two rules:

- ``atomic_write(path, data, what=...)`` for llmcli's own folders (registry, sessions, conversion
  cache): write a temp file beside the target, fsync, rename over it, fsync the folder, so a reader
  or a crash sees the old file or the new one, never half of one. Missing folders are created.
  An existing file keeps its permission bits; a read-only one (no owner write bit) is left alone
  and reported, because a rename would bypass what a plain write would refuse. A symlink is
  written through (its target is replaced, the link stays).
- ``write_user_file(path, data, force=..., kind=...)`` for a path the user typed (``/save``,
  ``/export``): never replaces a file that is not an llmcli file of the same ``kind`` unless
  ``force``; never writes through or over a symlink, a directory, a device, a FIFO or a socket,
  even with ``force``; never creates a folder. A new file is created without any window in
  which another file of the same name could be clobbered (hard link of the finished temp file).

Failures become one-line ``WriteError``s: "cannot write <what> <path>: <reason>".
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llmcli.errors import LlmcliError

# A user's file bigger than this is never one of ours (a saved chat or transcript is far smaller);
# it also bounds what is read to decide.
MAX_OWN_FILE = 64 * 1024 * 1024


class WriteError(LlmcliError):
    """A file could not be written; nothing was changed."""


@dataclass(frozen=True)
class FileKind:
    """What a user-path write produces, and how to recognise an earlier file of the same kind."""

    name: str  # "saved conversation", shown in messages
    is_ours: Callable[[bytes], bool]  # the existing file's bytes -> may we replace it without force?
    force_hint: str  # how to replace another file anyway, e.g. "/save! PATH replaces it"


_HINTS = {
    errno.EACCES: "check the permissions of the file and its folder",
    errno.EPERM: "check the permissions of the file and its folder",
    errno.ENOSPC: "free some disk space",
    errno.EDQUOT: "free some disk space (quota exceeded)",
    errno.EROFS: "the filesystem is mounted read-only; choose another place",
    errno.ENAMETOOLONG: "use a shorter name",
}


def _error(what: str, path: Path, e: OSError | str, hint: str | None = None) -> WriteError:
    if isinstance(e, OSError):
        reason = e.strerror or str(e)
        if e.errno == errno.ENOTDIR:
            reason = "a part of the folder path is a file, not a folder"
        hint = hint or _HINTS.get(e.errno or 0)
    else:
        reason = e
    return WriteError(f"cannot write {what} {path}: {reason}", hint)


def _as_bytes(data: bytes | str) -> bytes:
    return data.encode("utf-8") if isinstance(data, str) else data


def _write_temp(folder: Path, name: str, payload: bytes, mode: int | None) -> str:
    """A fsynced temp file in ``folder`` holding ``payload``; returns its path."""
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            if mode is not None:
                os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return tmp


def _unlink_quietly(p: str) -> None:
    try:
        os.unlink(p)
    except OSError:
        pass


def _fsync_dir(folder: Path) -> None:
    try:
        dfd = os.open(folder, os.O_RDONLY)
    except OSError:  # some filesystems cannot open a directory; the rename is still atomic
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _kind_of(st: os.stat_result) -> str | None:
    """Why a non-regular file cannot be a target, or None for a regular file."""
    m = st.st_mode
    if stat.S_ISREG(m):
        return None
    if stat.S_ISLNK(m):
        return "it is a symbolic link"
    if stat.S_ISDIR(m):
        return "it is a directory"
    if stat.S_ISFIFO(m):
        return "it is a FIFO (named pipe)"
    if stat.S_ISCHR(m) or stat.S_ISBLK(m):
        return "it is a device"
    if stat.S_ISSOCK(m):
        return "it is a socket"
    return "it is not a regular file"


def _replace(path: Path, payload: bytes, st: os.stat_result | None) -> None:
    """Rename a finished temp file over ``path`` (created 0600 when new, mode kept when not)."""
    mode = stat.S_IMODE(st.st_mode) if st is not None else None
    tmp = _write_temp(path.parent, path.name, payload, mode)
    try:
        if st is not None and os.geteuid() == 0 and (st.st_uid, st.st_gid) != (0, 0):
            os.chown(tmp, st.st_uid, st.st_gid)  # root rewriting a user's file must not take it over
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write(path: Path, data: bytes | str, *, what: str = "the file") -> None:
    """Replace ``path`` (inside llmcli's own folders) atomically with ``data``; see the module doc.
    Raises WriteError; the old file is intact after any failure."""
    path = Path(path)
    payload = _as_bytes(data)
    try:
        st = _lstat(path)
        if st is not None and stat.S_ISLNK(st.st_mode):
            path = Path(os.path.realpath(path))  # a link the user made (dotfiles): keep it, write its target
            st = _lstat(path)
        if st is not None:
            why = _kind_of(st)
            if why is not None:
                raise _error(what, path, why, "move it aside")
            if not st.st_mode & stat.S_IWUSR:
                raise _error(what, path, "the file is read-only",
                             f"llmcli leaves read-only files alone; chmod u+w {path} allows changes")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise _error(what, path, "a part of the folder path is a file, not a folder",
                         "check LLMCLI_DATA_DIR / LLMCLI_CACHE_DIR") from None
        _replace(path, payload, st)
    except OSError as e:
        raise _error(what, path, e) from None


def atomic_write_bytes(path: Path, payload: bytes, *, what: str = "the file") -> None:
    """Kept name for ``atomic_write`` with bytes (the registry calls it)."""
    atomic_write(path, payload, what=what)


def write_user_file(path: Path, data: bytes | str, *, force: bool, kind: FileKind) -> None:
    """Write ``data`` at a path the user gave, by the no-clobber rules in the module doc.
    Raises WriteError; nothing is changed then."""
    path = Path(path)
    payload = _as_bytes(data)
    what = f"the {kind.name} to"
    try:
        st = _lstat(path)
        if st is None:
            _create_new(path, payload, what)
            return
        why = _kind_of(st)
        if why is not None:
            raise _error(what, path, why, "give the path of a regular file")
        if not st.st_mode & stat.S_IWUSR:
            raise _error(what, path, "the file is read-only", "choose another name")
        if not force and not _is_ours(path, st, kind):
            raise _error(what, path, f"it exists and is not an llmcli {kind.name}", kind.force_hint)
        _replace(path, payload, st)
    except OSError as e:
        raise _error(what, path, e) from None


def _is_ours(path: Path, st: os.stat_result, kind: FileKind) -> bool:
    if st.st_size > MAX_OWN_FILE:
        return False
    try:
        with open(path, "rb") as f:
            return bool(kind.is_ours(f.read(MAX_OWN_FILE + 1)))
    except OSError:
        return False


def _create_new(path: Path, payload: bytes, what: str) -> None:
    folder = path.parent
    if not folder.is_dir():
        reason = "the folder does not exist" if not folder.exists() else "the folder path is not a folder"
        raise _error(what, path, f"{reason} ({folder})", "create the folder first; llmcli creates none")
    tmp = _write_temp(folder, path.name, payload, _new_file_mode())
    try:
        try:
            os.link(tmp, path)  # fails if the name appeared meanwhile: never clobbers
        except FileExistsError:
            raise _error(what, path, "a file of that name appeared while writing", "try again") from None
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
            _create_exclusive(path, payload)  # a filesystem without hard links (FAT, some FUSE)
    finally:
        _unlink_quietly(tmp)
    _fsync_dir(folder)


def _new_file_mode() -> int:
    """What a plain ``open(path, "w")`` would give a new file of the user's: 0666 less the umask."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _create_exclusive(path: Path, payload: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        _unlink_quietly(str(path))
        raise
