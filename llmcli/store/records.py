"""The model store's records and the schema of the registry file, checked on every read.

A record is frozen; a change makes a new record (``dataclasses.replace``). Each record has a
``kind`` that says which fields it must and may carry: ``pulled`` (files in the HF cache, with
the hub's hashes) and ``imported`` (the user's own files, never deleted by llmcli). A remote
model (a URL and a model id, no path, never an API key) or an adapter (a base record plus
adapter files) is a new kind: a row in ``KINDS`` and, if needed, a field here.

The validator is plain Python over ``json.loads`` output rather than pydantic: the schema is a
few dozen lines, `llmcli generate` reads the registry on every run without `-m PATH`, and
importing pydantic costs far more than this module and the read (see docs/architecture.md).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Mapping

from llmcli.errors import UsageError

VERSION = 2  # 1: records said "source": "hf" | "import" instead of "kind"
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_TIME_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
FORMATS = ("gguf", "hf")


class Damaged(ValueError):
    """The registry's content does not follow the schema; the message says where."""


@dataclass(frozen=True)
class StoredFile:
    name: str
    path: str
    size: int
    sha256: str | None = None  # the hub's hash (LFS files)
    blob_id: str | None = None  # the git blob sha1 (small files)

    def to_json(self) -> dict:
        return {"name": self.name, "path": self.path, "size": self.size, "sha256": self.sha256,
                "blob_id": self.blob_id}


@dataclass(frozen=True)
class ModelRecord:
    name: str
    kind: str  # a key of KINDS
    format: str = ""  # "gguf" | "hf" for the local kinds
    path: str = ""  # the .gguf file (first part of a split model) or the HF-format folder; "" if none
    files: tuple[StoredFile, ...] = ()
    size: int = 0
    quant: str | None = None
    license: str | None = None
    repo: str | None = None  # pulled: the hub repository, revision asked for, commit received, pull spec
    revision: str | None = None
    commit: str | None = None
    spec: str | None = None
    url: str | None = None  # remote: the server's OpenAI API root (never credentials, never a key)
    model_id: str | None = None  # remote: the server's model id; None = the server's only model
    added: str | None = None  # UTC, TIME_FORMAT
    last_used: str | None = None
    base: str | None = None  # adapter: the base model (a store name, or an absolute path) …
    base_sha256: str | None = None  # … its content hash when the adapter was trained …
    base_stamp: str | None = None  # … and "size:mtime_ns", so an unchanged base is not re-hashed on every run
    training: Mapping | None = field(default=None, compare=False)  # adapter: rank, alpha, targets, data hash, losses (llmcli finetune)

    @property
    def source(self) -> str:
        """The pre-kind spelling, kept in ``--json`` output: "hf" or "import"."""
        return {"pulled": "hf", "imported": "import"}.get(self.kind, self.kind)

    @property
    def deletes_files(self) -> bool:
        """Whether removing the record frees its HF-cache files (only what llmcli downloaded itself)."""
        return self.kind == "pulled"

    def describe_source(self) -> str:
        if self.kind == "adapter":
            return f"LoRA adapter on {self.base}"
        if self.kind == "imported":
            return f"imported from {self.path}"
        if self.kind == "remote":
            return f"served at {self.url}" + (f"#{self.model_id}" if self.model_id else "")
        return "pulled from " + (self.repo or "?") + (f":{self.quant}" if self.quant else "")

    def same_source(self, other: "ModelRecord") -> bool:
        """True when ``other`` is the same model again (so it may take this record's name)."""
        if self.kind != other.kind:
            return False
        if self.kind == "imported":
            return self.path == other.path
        if self.kind == "adapter":
            return self.base == other.base
        if self.kind == "remote":
            return (self.url, self.model_id) == (other.url, other.model_id)
        return self.repo == other.repo and self.format == other.format

    def to_json(self) -> dict:
        out = {"kind": self.kind}
        for f, _, _ in KINDS[self.kind]:
            value = getattr(self, f)
            out[f] = [x.to_json() for x in value] if f == "files" else value
        out["added"] = self.added
        out["last_used"] = self.last_used
        return out


# ---------------------------------------------------------------- names

MAX_NAME = 200
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+/-]*")


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


# ---------------------------------------------------------------- the schema

def _str(v) -> bool:
    return isinstance(v, str) and v != ""


def _path(v) -> bool:
    return _str(v) and "\x00" not in v


def _opt_str(v) -> bool:
    return v is None or isinstance(v, str)


def _count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _format(v) -> bool:
    return v in FORMATS


def _mapping(v) -> bool:
    return isinstance(v, dict)


def _files(v) -> bool:
    return isinstance(v, list)  # each element is checked by _stored_file


def _url(v) -> bool:
    """An http(s) URL without credentials (a remote record never holds a key)."""
    from llmcli.store.refs import parse_model_url

    if not _str(v) or "#" in v:
        return False
    try:
        return parse_model_url(v)[0] == v
    except UsageError:
        return False


# Per kind: (field, check, required). Fields not listed must be absent or null.
KINDS: dict[str, tuple[tuple[str, object, bool], ...]] = {
    "imported": (("format", _format, True), ("path", _path, True), ("files", _files, True),
                 ("size", _count, True), ("quant", _opt_str, False), ("license", _opt_str, False)),
    "pulled": (("format", _format, True), ("path", _path, True), ("files", _files, True),
               ("size", _count, True), ("quant", _opt_str, False), ("license", _opt_str, False),
               ("repo", _str, True), ("revision", _str, True), ("commit", _str, True), ("spec", _opt_str, False)),
    "remote": (("url", _url, True), ("model_id", _opt_str, False)),
    # llmcli finetune: a LoRA adapter folder in the data dir (removed with the record) over a base model
    "adapter": (("path", _path, True), ("files", _files, True), ("size", _count, True), ("base", _str, True),
                ("base_sha256", _str, True), ("base_stamp", _opt_str, False), ("training", _mapping, False)),
}
_LEGACY_SOURCE = {"hf": "pulled", "import": "imported"}


def now() -> str:
    return datetime.now(timezone.utc).strftime(TIME_FORMAT)


def parse_time(ts: str) -> datetime:
    """A registry timestamp as an aware UTC datetime."""
    return datetime.strptime(ts, TIME_FORMAT).replace(tzinfo=timezone.utc)


def _time(v) -> bool:
    if v is None:
        return True
    if not isinstance(v, str) or not _TIME_RE.fullmatch(v):
        return False
    try:
        parse_time(v)
    except ValueError:
        return False
    return True


def _stored_file(v, where: str) -> StoredFile:
    if not isinstance(v, dict):
        raise Damaged(f"{where} is not an object")
    for key, check in (("name", _str), ("path", _path), ("size", _count), ("sha256", _opt_str),
                       ("blob_id", _opt_str)):
        if not check(v.get(key)):
            raise Damaged(f"{where}.{key} is missing or of the wrong type")
    return StoredFile(v["name"], v["path"], v["size"], v.get("sha256"), v.get("blob_id"))


def record_from_json(name: str, obj, version: int = VERSION) -> ModelRecord:
    """Validate one registry entry; raises ``Damaged`` naming the first wrong field."""
    where = f"models[{name!r}]"
    if not isinstance(obj, dict):
        raise Damaged(f"{where} is not an object")
    kind = obj.get("kind")
    if kind is None and version == 1 and isinstance(obj.get("source"), str):
        kind = _LEGACY_SOURCE.get(obj["source"])
    if not isinstance(kind, str) or kind not in KINDS:
        raise Damaged(f"{where} has an unknown kind {kind!r}")
    values = {}
    for f, check, required in KINDS[kind]:
        v = obj.get(f)
        if v is None and not required:
            continue
        if not check(v):
            raise Damaged(f"{where}.{f} is missing or of the wrong type")
        values[f] = v
    values["files"] = tuple(_stored_file(x, f"{where}.files[{i}]") for i, x in enumerate(values.get("files", ())))
    for f in ("added", "last_used"):
        if not _time(obj.get(f)):
            raise Damaged(f"{where}.{f} is not a UTC timestamp like 2026-01-31T12:00:00Z")
        values[f] = obj.get(f)
    return ModelRecord(name=name, kind=kind, **values)


@dataclass(frozen=True)
class Registry:
    """One validated snapshot of the registry file."""

    models: Mapping[str, ModelRecord] = field(default_factory=lambda: MappingProxyType({}))
    aliases: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    default: str | None = None

    def canonical(self, name: str) -> str | None:
        """The model name behind ``name`` (itself or an alias); case-insensitive when unambiguous."""
        if name in self.models:
            return name
        if name in self.aliases:
            return self.aliases[name]
        low = name.lower()
        hits = {n for n in self.models if n.lower() == low}
        hits |= {t for a, t in self.aliases.items() if a.lower() == low}
        return hits.pop() if len(hits) == 1 else None

    def get(self, name: str) -> ModelRecord | None:
        key = self.canonical(name)
        return self.models.get(key) if key is not None else None

    def aliases_of(self, name: str) -> list[str]:
        return sorted(a for a, t in self.aliases.items() if t == name)

    def to_json(self) -> dict:
        return {"version": VERSION, "default": self.default,
                "models": {n: r.to_json() for n, r in self.models.items()}, "aliases": dict(self.aliases)}


def parse_registry(raw: bytes) -> Registry:
    """The registry file's bytes -> a Registry; ``Damaged`` for anything else."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Damaged(f"not UTF-8 text (byte {e.start})") from None
    try:
        data = json.loads(text)
    except RecursionError:
        raise Damaged("nested too deeply") from None
    except ValueError as e:
        raise Damaged(str(e)) from None
    if not isinstance(data, dict):
        raise Damaged("not a JSON object")
    version = data.get("version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise Damaged("version is not a positive integer")
    if version > VERSION:
        raise Damaged(f"version {version} was written by a newer llmcli (this one reads up to {VERSION})")
    models, aliases, default = data.get("models"), data.get("aliases", {}), data.get("default")
    if not isinstance(models, dict):
        raise Damaged("models is missing or not an object")
    if not isinstance(aliases, dict):
        raise Damaged("aliases is not an object")
    records = {}
    for name, obj in models.items():
        try:
            validate_name(name)
        except UsageError as e:
            raise Damaged(f"bad model name: {e.message}") from None
        records[name] = record_from_json(name, obj, version)
    for alias, target in aliases.items():
        try:
            validate_name(alias, "alias")
        except UsageError as e:
            raise Damaged(f"bad alias: {e.message}") from None
        if not isinstance(target, str) or target not in records:
            raise Damaged(f"alias {alias!r} points at no model ({target!r})")
        if alias in records:
            raise Damaged(f"{alias!r} is both a model and an alias")
    if default is not None and not isinstance(default, str):
        raise Damaged(f"default is {type(default).__name__} {default!r}, not a model name")
    if default is not None and default not in records:
        raise Damaged(f"the default {default!r} names no model")
    return Registry(MappingProxyType(records), MappingProxyType(dict(aliases)), default)
