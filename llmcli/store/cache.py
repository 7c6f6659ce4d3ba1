"""Housekeeping in the HF cache for the files llmcli pulled: free a removed model's files
when nothing else references them, find stale partial downloads and orphaned blobs.

Layout (huggingface_hub's): ``models--OWNER--NAME/{blobs/<etag>, snapshots/<commit>/<file> -> blob,
refs/<revision>}``, with per-blob locks in ``.locks/models--OWNER--NAME/<etag>.lock`` held
while a download writes ``blobs/<etag>.<random>.incomplete``.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from llmcli.store.hub import hub_cache_dir

# Without working flock (some network filesystems) a partial file counts as stale after this.
STALE_WITHOUT_LOCK_S = 24 * 3600


@dataclass
class Partial:
    path: Path
    size: int
    age_s: float
    active: bool  # a live download holds its lock


def _lock_path(repo_dir: Path, etag: str) -> Path:
    return repo_dir.parent / ".locks" / repo_dir.name / f"{etag}.lock"


def is_locked(lock: Path, mtime: float | None = None) -> bool:
    """True when a live process holds this huggingface_hub download lock."""
    if not lock.exists():
        return False
    from filelock import FileLock, Timeout

    fl = FileLock(str(lock), timeout=0)
    try:
        fl.acquire(timeout=0)
    except Timeout:
        return True
    except (NotImplementedError, OSError):
        return mtime is not None and time.time() - mtime < STALE_WITHOUT_LOCK_S
    fl.release()
    return False


def _repo_dirs() -> list[Path]:
    root = hub_cache_dir()
    try:
        return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("models--"))
    except OSError:
        return []


def partial_downloads() -> list[Partial]:
    out = []
    for repo in _repo_dirs():
        for p in sorted((repo / "blobs").glob("*.incomplete")):
            try:
                st = p.stat()
            except OSError:
                continue
            etag = p.name.split(".", 1)[0]
            out.append(Partial(p, st.st_size, time.time() - st.st_mtime, is_locked(_lock_path(repo, etag),
                                                                                    st.st_mtime)))
    return out


def _referenced_blobs(repo: Path) -> set[str]:
    refs = set()
    snaps = repo / "snapshots"
    if snaps.is_dir():
        for dirpath, dirnames, filenames in os.walk(snaps):
            for n in filenames + dirnames:
                p = os.path.join(dirpath, n)
                if os.path.islink(p):
                    refs.add(os.path.realpath(p))
    return refs


def unreferenced_blobs() -> list[tuple[Path, int]]:
    """Blobs no snapshot points at (left by failed or removed downloads), not being written now."""
    out = []
    for repo in _repo_dirs():
        blobs = repo / "blobs"
        if not blobs.is_dir():
            continue
        refs = _referenced_blobs(repo)
        for b in sorted(blobs.iterdir()):
            if b.name.endswith(".incomplete") or not b.is_file() or b.is_symlink():
                continue
            if os.path.realpath(b) in refs or is_locked(_lock_path(repo, b.name)):
                continue
            out.append((b, b.stat().st_size))
    return out


def _tidy_repo(repo: Path) -> None:
    """Remove empty snapshot folders; remove the whole repo folder once nothing is left in it."""
    snaps = repo / "snapshots"
    if snaps.is_dir():
        for dirpath, dirnames, filenames in os.walk(snaps, topdown=False):
            if dirpath != str(snaps) and not os.listdir(dirpath):
                try:
                    os.rmdir(dirpath)
                except OSError:
                    pass
    left_snaps = snaps.is_dir() and any(snaps.iterdir())
    blobs = repo / "blobs"
    left_blobs = blobs.is_dir() and any(blobs.iterdir())
    if not left_snaps and not left_blobs and repo.is_dir():
        shutil.rmtree(repo, ignore_errors=True)
        locks = repo.parent / ".locks" / repo.name
        shutil.rmtree(locks, ignore_errors=True)


def release_files(rec: dict, others: list[dict]) -> int:
    """Delete a pulled model's snapshot files and blobs that no other registered model uses.

    Imported models are never touched. Returns the bytes freed."""
    if rec.get("source") != "hf":
        return 0
    other_pointers = set()
    other_blobs = set()
    for o in others:
        if o.get("source") != "hf":
            continue
        for f in o.get("files", []):
            other_pointers.add(os.path.abspath(f["path"]))
            other_blobs.add(os.path.realpath(f["path"]))
    freed = 0
    repos = set()
    for f in rec.get("files", []):
        pointer = os.path.abspath(f["path"])
        if pointer in other_pointers:
            continue
        blob = os.path.realpath(pointer)
        repo = Path(pointer)
        while repo.name != "snapshots" and repo != repo.parent:
            repo = repo.parent
        repo = repo.parent
        if not repo.name.startswith("models--"):
            continue  # not an HF cache layout we know: leave it alone
        repos.add(repo)
        try:
            os.unlink(pointer)
        except FileNotFoundError:
            pass
        if blob in other_blobs or blob == pointer or not blob.startswith(os.path.realpath(repo / "blobs") + os.sep):
            continue
        if blob in _referenced_blobs(repo):
            continue  # another snapshot of this repo (another revision, another tool) still uses it
        try:
            size = os.path.getsize(blob)
            os.unlink(blob)
            freed += size
        except FileNotFoundError:
            pass
    for repo in repos:
        _tidy_repo(repo)
    return freed


def remove_paths(paths: list[Path]) -> int:
    freed = 0
    for p in paths:
        try:
            size = p.stat().st_size
            p.unlink()
            freed += size
        except FileNotFoundError:
            pass
    for repo in {p.parent.parent for p in paths}:
        if repo.name.startswith("models--"):
            _tidy_repo(repo)
    return freed
