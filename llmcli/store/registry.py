"""The registry file: where it lives, reading it (schema-checked, never rewritten by a read),
and read-modify-write under a file lock (concurrent pulls), written through ``fileio``'s
atomic write, so a crash mid-write leaves either the old or the new file, never half of one.

Records point at files elsewhere (the HF cache snapshot for pulled models, the user's own path
for imported ones): names never become paths, and they are validated anyway.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from llmcli.errors import StoreError
from llmcli.store.records import Damaged, ModelRecord, Registry, parse_registry, validate_name  # noqa: F401

REGISTRY_FILE = "registry.json"
LOCK_FILE = "registry.lock"
DAMAGED_HINT = "move it aside and re-register models with `llmcli pull` / `llmcli models import`"


def registry_path() -> Path:
    from llmcli.config import data_dir

    return data_dir() / REGISTRY_FILE


def _write_error(path: Path, e: OSError) -> StoreError:
    return StoreError(f"cannot write the model registry {path}: {e.strerror or e}",
                      f"make {path.parent} a writable folder, or point LLMCLI_DATA_DIR at one")


def read(path: Path, *, for_write: bool = False) -> Registry:
    """The registry at ``path`` (empty when there is none yet); StoreError when unreadable or damaged."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Registry()
    except OSError as e:
        if for_write:
            raise _write_error(path, e) from None
        raise StoreError(f"cannot read the model registry {path}: {e.strerror or e}",
                         f"check that {path.parent} is a readable folder (LLMCLI_DATA_DIR)") from None
    try:
        return parse_registry(raw)
    except Damaged as e:
        raise StoreError(f"the model registry {path} is damaged ({e})", DAMAGED_HINT) from None


def load() -> Registry:
    """A snapshot of the registry (no lock: the file is always whole thanks to rename)."""
    return read(registry_path())


@dataclass
class Draft:
    """A mutable copy of the registry inside a transaction; records themselves stay frozen."""

    models: dict[str, ModelRecord] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    default: str | None = None

    def snapshot(self) -> Registry:
        return Registry(MappingProxyType(dict(self.models)), MappingProxyType(dict(self.aliases)), self.default)


@contextmanager
def _locked(path: Path):
    """Exclusive lock for a read-modify-write of the registry."""
    from filelock import FileLock, Timeout

    lock_path = path.parent / LOCK_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(lock_path), timeout=60)
        lock.acquire()
    except Timeout:
        raise StoreError(f"the model registry is locked by another llmcli process ({lock_path})",
                         "wait for the other pull to finish") from None
    except OSError as e:
        raise _write_error(path, e) from None
    try:
        yield
    finally:
        lock.release()


def _encode(reg: Registry) -> bytes:
    return (json.dumps(reg.to_json(), indent=2, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")


@contextmanager
def transaction():
    """``with transaction() as draft: ...`` changes the registry; written back atomically on success.

    A damaged registry fails here, before any change, and is left as it is."""
    from llmcli.fileio import atomic_write_bytes

    path = registry_path()
    read(path, for_write=True)  # a damaged or unreachable registry fails before a lock file is made
    with _locked(path):
        before = read(path, for_write=True)
        draft = Draft(dict(before.models), dict(before.aliases), before.default)
        yield draft
        after = draft.snapshot()
        if after != before:
            try:
                atomic_write_bytes(path, _encode(after))
            except OSError as e:
                raise _write_error(path, e) from None
