"""Housekeeping in the HF cache for the files llmcli pulled, through huggingface_hub's public cache
API (``scan_cache_dir``, ``HFCacheInfo.delete_files`` / ``delete_revisions``): free a removed
model's files when nothing else references them, find stale partial downloads and orphaned blobs.

Whether a partial download is still being written is the one question the API does not answer.
huggingface_hub holds ``WeakFileLock(<cache>/.locks/<repo folder>/<etag>.lock)`` while it
downloads; a partial file counts as stale only when that lock file exists and nobody holds it,
or, when there is no lock file where we expect it (the library moved its locks, a filesystem
without flock), when nothing has written to it for ``STALE_WITHOUT_LOCK_S``. So a change of
lock layout can only make prune keep more, never delete a download in progress.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from llmcli.store.hub import hub_cache_dir
from llmcli.store.records import ModelRecord

STALE_WITHOUT_LOCK_S = 24 * 3600
LOCK_PROBE_S = 0.05


@dataclass(frozen=True)
class Partial:
    path: Path
    size: int
    age_s: float
    active: bool  # a live download holds its lock, or it was written to recently and has no lock to ask


@dataclass(frozen=True)
class Orphan:
    path: Path
    size: int


def scan():
    """huggingface_hub's view of the cache, or None when there is no cache folder yet."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        return scan_cache_dir(hub_cache_dir())
    except (CacheNotFound, ValueError, OSError):
        return None


def _lock_file(blob: Path) -> Path:
    """Where huggingface_hub's download lock for this blob (or partial file) lives."""
    repo = blob.parent.parent
    etag = blob.name.split(".", 1)[0]
    return repo.parent / ".locks" / repo.name / f"{etag}.lock"


def _held(lock: Path) -> bool | None:
    """True/False when the lock can be asked; None when there is no lock file or no working flock."""
    if not lock.exists():
        return None
    from filelock import Timeout
    from huggingface_hub.utils import WeakFileLock

    try:
        with WeakFileLock(lock, timeout=LOCK_PROBE_S):
            return False
    except Timeout:
        return True
    except OSError:
        return None


def _active(path: Path, mtime: float) -> bool:
    held = _held(_lock_file(path))
    if held is None:
        return time.time() - mtime < STALE_WITHOUT_LOCK_S
    return held


def partial_downloads() -> list[Partial]:
    info = scan()
    if info is None:
        return []
    out = []
    for f in sorted(info.incomplete_files, key=lambda f: str(f.file_path)):
        try:
            st = f.file_path.stat()
        except OSError:
            continue
        out.append(Partial(f.file_path, st.st_size, time.time() - st.st_mtime, _active(f.file_path, st.st_mtime)))
    return out


def unreferenced_blobs() -> list[Orphan]:
    """Blobs of the repositories huggingface_hub sees that no snapshot points at (left by failed or
    removed downloads) and that no download holds. Repositories it reports as corrupted are skipped."""
    info = scan()
    if info is None:
        return []
    out = []
    for repo in sorted(info.repos, key=lambda r: str(r.repo_path)):
        used = {os.path.realpath(f.blob_path) for rev in repo.revisions for f in rev.files}
        try:
            blobs = sorted((repo.repo_path / "blobs").iterdir())
        except OSError:
            continue
        for b in blobs:
            if b.name.endswith(".incomplete") or b.is_symlink() or not b.is_file():
                continue
            if os.path.realpath(b) in used or _held(_lock_file(b)):
                continue
            out.append(Orphan(b, b.stat().st_size))
    return out


def release_files(rec: ModelRecord, others: Iterable[ModelRecord]) -> int:
    """Delete a pulled model's cache files that no other registered model uses; a blob another
    snapshot still links to is kept. A revision left with nothing else goes whole (refs included).
    Imported models are never touched. Returns the bytes freed."""
    if not rec.deletes_files:
        return 0
    info = scan()
    if info is None:
        return 0
    kept = {os.path.abspath(f.path) for o in others if o.deletes_files for f in o.files}
    mine = {os.path.abspath(f.path) for f in rec.files} - kept
    whole, single = [], []
    for repo in info.repos:
        for rev in repo.revisions:
            hits = [f for f in rev.files if os.path.abspath(f.file_path) in mine]
            if not hits:
                continue
            if len(hits) == len(rev.files):
                whole.append(rev.commit_hash)
            else:
                single += hits
    freed = 0
    for strategy in (info.delete_files(*single) if single else None,
                     info.delete_revisions(*whole) if whole else None):
        if strategy is not None:
            strategy.execute()
            freed += strategy.expected_freed_size
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
    return freed
