"""The local model registry: names, aliases, the default model and "last used" times.

One small JSON file in the platformdirs data dir. Every change is a read-modify-write under
a file lock (concurrent pulls), written to a temporary file, fsynced and renamed over the old
one, so a crash mid-write leaves either the old or the new file, never half of one.

Records point at files elsewhere (the HF cache snapshot for pulled models, the user's own
path for imported ones): names never become paths, and they are validated anyway.
"""

from __future__ import annotations

import json
import os
import re
import time
from contextlib import contextmanager
from pathlib import Path

from llmcli.errors import ModelError, StoreError, UsageError
from llmcli.store.refs import ModelRef
from llmcli.fileio import atomic_write_bytes

REGISTRY_FILE = "registry.json"
LOCK_FILE = "registry.lock"
VERSION = 1
MAX_NAME = 200
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+/-]*")


# ---------------------------------------------------------------- names

def validate_name(name: str, what: str = "name") -> str:
    """A store name or alias: printable, no path tricks, and not something -m would read as a path."""
    if not isinstance(name, str) or not name:
        raise UsageError(f"empty model {what}")
    if "\x00" in name:
        raise UsageError(f"model {what} contains a NUL byte")
    shown = name if name.isprintable() else repr(name)
    hint = "use letters, digits and . _ - : @ + / (e.g. smol, qwen2.5:7b)"
    if len(name) > MAX_NAME:
        raise UsageError(f"model {what} is longer than {MAX_NAME} characters", hint)
    if name.startswith(("/", "~", ".")) or "\\" in name or re.match(r"^[A-Za-z]:", name):
        raise UsageError(f"model {what} {shown!r} looks like a path", hint)
    if any(seg in ("", ".", "..") for seg in name.split("/")):
        raise UsageError(f"model {what} {shown!r} contains an empty, '.' or '..' path segment", hint)
    if not _NAME_RE.fullmatch(name):
        raise UsageError(f"invalid model {what} {shown!r}", hint)
    if name.lower().endswith(".gguf"):
        raise UsageError(f"model {what} {shown!r} ends with .gguf, which -m reads as a file path", hint)
    return name


# ---------------------------------------------------------------- file I/O

def registry_path() -> Path:
    from llmcli.config import data_dir

    return data_dir() / REGISTRY_FILE


def _empty() -> dict:
    return {"version": VERSION, "default": None, "models": {}, "aliases": {}}


def _read(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return _empty()
    except OSError as e:
        raise StoreError(f"cannot read the model registry {path}: {e.strerror}") from None
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
            raise ValueError("not a registry object")
    except ValueError as e:
        raise StoreError(f"the model registry {path} is damaged ({e})",
                         "move it aside and re-register models with `llmcli pull` / `llmcli models import`") from None
    data.setdefault("aliases", {})
    data.setdefault("default", None)
    data.setdefault("version", VERSION)
    return data


def atomic_write(path: Path, data: dict) -> None:
    """Write JSON atomically over ``path`` (see ``llmcli.fileio``)."""
    payload = (json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
    atomic_write_bytes(path, payload, what="the model registry")


@contextmanager
def _locked():
    """Exclusive lock for a read-modify-write of the registry."""
    from filelock import FileLock, Timeout

    path = registry_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path.parent / LOCK_FILE), timeout=60)
    try:
        lock.acquire()
    except Timeout:
        raise StoreError(f"the model registry is locked by another llmcli process ({path.parent / LOCK_FILE})",
                         "wait for the other pull to finish") from None
    try:
        yield path
    finally:
        lock.release()


@contextmanager
def transaction():
    """``with transaction() as data: ...`` mutates the registry; written back atomically on success."""
    with _locked() as path:
        data = _read(path)
        before = json.dumps(data, sort_keys=True)
        yield data
        if json.dumps(data, sort_keys=True) != before:
            atomic_write(path, data)


def load() -> dict:
    """A snapshot of the registry (no lock: the file is always whole thanks to rename)."""
    return _read(registry_path())


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# ---------------------------------------------------------------- queries

def canonical(data: dict, name: str) -> str | None:
    """The model name behind ``name`` (itself or an alias); case-insensitive when unambiguous."""
    if name in data["models"]:
        return name
    if name in data["aliases"]:
        return data["aliases"][name]
    low = name.lower()
    hits = {n for n in data["models"] if n.lower() == low}
    hits |= {t for a, t in data["aliases"].items() if a.lower() == low}
    return hits.pop() if len(hits) == 1 else None


def aliases_of(data: dict, name: str) -> list[str]:
    return sorted(a for a, t in data["aliases"].items() if t == name)


def get(name: str, data: dict | None = None) -> tuple[str, dict] | None:
    data = data if data is not None else load()
    key = canonical(data, name)
    if key is None or key not in data["models"]:
        return None
    return key, data["models"][key]


def record_ref(key: str, rec: dict, shown: str | None = None) -> ModelRef:
    path = Path(rec["path"])
    if not path.exists():
        where = "imported from" if rec.get("source") == "import" else "stored at"
        raise ModelError(f"model {key!r} is registered but its files are gone ({where} {path})",
                         f"pull or import it again, or run `llmcli models rm {key}`")
    return ModelRef(path, rec["format"], shown or key, "store", extra={"record": rec, "store_name": key})


def lookup(name: str) -> ModelRef | None:
    """Hook for ``store.resolve``: a store name or alias -> ModelRef, or None when unknown."""
    if "\x00" in name:
        return None
    found = get(name)
    if found is None:
        return None
    key, rec = found
    return record_ref(key, rec)


def default_ref() -> ModelRef | None:
    """The model set with ``llmcli models default``, if any."""
    data = load()
    name = data.get("default")
    if not name:
        return None
    found = get(name, data)
    if found is None:
        return None
    return record_ref(*found)


def default_name() -> str | None:
    return load().get("default")


# ---------------------------------------------------------------- changes

def register(name: str, record: dict, *, replace_same_source: bool = True) -> dict | None:
    """Add or update ``name``. Returns the record it replaced, if any.

    Refuses to take a name that is an alias, or a model from another source."""
    validate_name(name)
    for f in record.get("files", []):
        if not os.path.exists(f["path"]):
            raise StoreError(f"cannot register {name!r}: {f['path']} vanished",
                             "another process removed it; run the command again")
    with transaction() as data:
        if name in data["aliases"]:
            raise StoreError(f"{name!r} is already an alias of {data['aliases'][name]!r}",
                             f"choose another name with --as, or `llmcli models alias --delete {name}`")
        old = data["models"].get(name)
        if old is not None and not (replace_same_source and same_source(old, record)):
            raise StoreError(f"a model named {name!r} already exists ({describe_source(old)})",
                             f"choose another name with --as, or `llmcli models rm {name}` first")
        rec = dict(record)
        rec["name"] = name
        rec.setdefault("added", now())
        if old is not None:
            rec["added"] = old.get("added", rec["added"])
            rec["last_used"] = old.get("last_used")
        else:
            rec.setdefault("last_used", None)
        data["models"][name] = rec
        return old


def same_source(a: dict, b: dict) -> bool:
    if a.get("source") != b.get("source"):
        return False
    if a.get("source") == "import":
        return a.get("path") == b.get("path")
    return a.get("repo") == b.get("repo") and a.get("format") == b.get("format")


def describe_source(rec: dict) -> str:
    if rec.get("source") == "import":
        return f"imported from {rec.get('path')}"
    src = rec.get("repo", "?")
    if rec.get("quant"):
        src += f":{rec['quant']}"
    return f"pulled from {src}"


def remove(name: str) -> tuple[str, dict | None, list[dict]]:
    """Unregister a model (with its aliases and default) or just an alias.

    Returns (what, record, remaining records): ``what`` is "alias" or "model"; for a model the
    remaining records let the caller decide which files nobody else references."""
    with transaction() as data:
        if name in data["aliases"]:
            del data["aliases"][name]
            return "alias", None, list(data["models"].values())
        key = canonical(data, name)
        if key is None or key not in data["models"]:
            raise StoreError(f"no model named {name!r} in the store", "see `llmcli models list`")
        rec = data["models"].pop(key)
        for a in aliases_of(data, key):
            del data["aliases"][a]
        if data.get("default") == key or data.get("default") in aliases_of(data, key):
            data["default"] = None
        return "model", rec, list(data["models"].values())


def set_alias(alias: str, target: str) -> str:
    validate_name(alias, "alias")
    with transaction() as data:
        key = canonical(data, target)
        if key is None or key not in data["models"]:
            raise StoreError(f"no model named {target!r} in the store", "see `llmcli models list`")
        if alias in data["models"]:
            raise StoreError(f"{alias!r} is already a model name", "choose another alias")
        data["aliases"][alias] = key
        return key


def delete_alias(alias: str) -> str:
    with transaction() as data:
        if alias not in data["aliases"]:
            raise StoreError(f"no alias named {alias!r}", "see `llmcli models list`")
        return data["aliases"].pop(alias)


def set_default(name: str | None) -> str | None:
    with transaction() as data:
        if name is None:
            data["default"] = None
            return None
        key = canonical(data, name)
        if key is None or key not in data["models"]:
            raise StoreError(f"no model named {name!r} in the store", "see `llmcli models list`")
        data["default"] = key
        return key


def touch_last_used(name: str) -> None:
    """Record that a model was just used (called by the commands after loading it)."""
    with transaction() as data:
        key = canonical(data, name)
        if key is not None and key in data["models"]:
            data["models"][key]["last_used"] = now()
