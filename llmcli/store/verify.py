"""Hashes that prove a downloaded file is the one the hub published.

LFS files (weights) are checked against the hub's sha256; small git files against their
git blob sha1. To keep verification off the critical path, ``TailHasher`` hashes a file
while huggingface_hub is still writing it (it follows the download's ``.incomplete`` file
through the final rename); any doubt about what it saw falls back to hashing the final
file again, which stays the authority.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

CHUNK = 4 << 20


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def git_blob_sha1(path: str | os.PathLike) -> str:
    size = os.path.getsize(path)
    h = hashlib.sha1(b"blob %d\0" % size)
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


class TailHasher(threading.Thread):
    """Hash ``<blobs>/<etag>.*.incomplete`` as it grows, while another thread downloads it.

    ``finish(final_path)`` returns the sha256 when the bytes hashed are provably the final
    file's bytes (same inode, same length, never seen shrinking), else None.
    """

    POLL = 0.004

    def __init__(self, blobs_dir: Path, etag: str):
        super().__init__(daemon=True, name=f"tailhash-{etag[:8]}")
        self.blobs_dir = Path(blobs_dir)
        self.pattern = f"{etag}.*.incomplete"
        self.before = self._candidates()
        self.done = threading.Event()
        self.result: tuple[str, int, int, int] | None = None  # digest, length, st_dev, st_ino

    def _candidates(self) -> set[Path]:
        try:
            return set(self.blobs_dir.glob(self.pattern))
        except OSError:
            return set()

    def run(self) -> None:
        try:
            self._run()
        except Exception:  # noqa: BLE001 - a failed shortcut just means "hash again later"
            self.result = None

    def _run(self) -> None:
        path = None
        while path is None:
            new = self._candidates() - self.before
            if len(new) == 1:
                path = new.pop()
                break
            if len(new) > 1 or self.done.is_set():
                return  # a concurrent download of the same blob, or nothing was downloaded
            time.sleep(self.POLL)
        try:
            f = open(path, "rb", buffering=0)
        except FileNotFoundError:
            return  # already renamed: too fast to follow
        h = hashlib.sha256()
        length = 0
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        with f:
            while True:
                n = f.readinto(buf)
                if n:
                    h.update(view[:n])
                    length += n
                    continue
                if self.done.is_set():
                    # The writer has finished: whatever is left is readable now.
                    while n := f.readinto(buf):
                        h.update(view[:n])
                        length += n
                    break
                if os.fstat(f.fileno()).st_size < length:
                    return  # truncated (server ignored Range): what we hashed is stale
                time.sleep(self.POLL)
            st = os.fstat(f.fileno())
            if st.st_size != length:
                return
            self.result = (h.hexdigest(), length, st.st_dev, st.st_ino)

    def finish(self, final_path: str | os.PathLike | None) -> str | None:
        self.done.set()
        self.join()
        if self.result is None or final_path is None:
            return None
        digest, length, dev, ino = self.result
        try:
            st = os.stat(final_path)
        except OSError:
            return None
        if (st.st_dev, st.st_ino, st.st_size) != (dev, ino, length):
            return None
        return digest
