"""What ``ModelStore`` operations return: frozen reports that ``cli/models.py`` presents."""

from __future__ import annotations

from dataclasses import dataclass

from llmcli.store.records import ModelRecord, StoredFile
from llmcli.store.refs import ModelRef


@dataclass(frozen=True)
class PullResult:
    record: ModelRecord
    replaced: ModelRecord | None
    freed: int  # bytes of the replaced record's files nobody else uses


@dataclass(frozen=True)
class Removal:
    name: str
    kind: str  # "alias" | "model"
    record: ModelRecord | None  # the model (for an alias: the model it pointed at)
    freed: int = 0


@dataclass(frozen=True)
class FileCheck:
    name: str
    status: str  # "ok" | "mismatch" | "missing" | "unverifiable"
    path: str
    algorithm: str | None = None
    expected: str | None = None
    actual: str | None = None


@dataclass(frozen=True)
class Verification:
    record: ModelRecord
    files: tuple[FileCheck, ...]

    @property
    def bad(self) -> tuple[FileCheck, ...]:
        return tuple(f for f in self.files if f.status in ("missing", "mismatch"))


@dataclass(frozen=True)
class PruneReport:
    partials: tuple  # cache.Partial
    orphans: tuple  # cache.Orphan
    missing: tuple[str, ...]  # registered models whose files are gone
    dry_run: bool

    @property
    def freed(self) -> int:
        return sum(p.size for p in self.partials) + sum(o.size for o in self.orphans)


@dataclass(frozen=True)
class ModelInfo:
    """What ``models show`` presents: the record (None for a plain path), its ref, header metadata."""

    record: ModelRecord | None
    ref: ModelRef
    metadata: dict
    files: tuple[StoredFile, ...]
    aliases: tuple[str, ...] = ()
    is_default: bool = False
