"""Adapters in the store (``llmcli finetune``): a LoRA folder in the data dir over a base model.

The base is named (a store name, or an absolute path for a model outside the store such as the
embedded SmolLM2) and identified by content: the sha256 of its files when the adapter was trained.
A run checks the base's size and modification time against the recorded stamp and re-hashes only
when they differ, so an unchanged base costs a ``stat``, and a changed one is refused.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from llmcli.errors import ModelError
from llmcli.store.refs import ModelRef

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


@dataclass(frozen=True)
class BaseIdentity:
    spec: str  # what the adapter record names: a store name or an absolute path
    sha256: str
    stamp: str


def _base_files(ref: ModelRef) -> list[Path]:
    p = Path(ref.path)
    if p.is_file():
        return [p]
    return sorted(f for f in p.iterdir() if f.is_file() and (f.suffix in WEIGHT_SUFFIXES or f.name == "config.json"))


def stamp(ref: ModelRef) -> str:
    parts = []
    for f in _base_files(ref):
        st = f.stat()
        parts.append(f"{f.name}:{st.st_size}:{st.st_mtime_ns}")
    return ";".join(parts)


def content_hash(ref: ModelRef) -> str:
    """sha256 of the base's weights (one file), or of the names and hashes of a folder's weight files."""
    from llmcli.store.verify import sha256_file

    files = _base_files(ref)
    if len(files) == 1 and Path(ref.path).is_file():
        return sha256_file(files[0])
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.name}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


def identity(ref: ModelRef) -> BaseIdentity:
    if ref.path is None:
        raise ModelError(f"{ref.display} is served by a remote server; only a local model can be fine-tuned",
                         "pass a .gguf file, an HF-format folder or a local store name with -m")
    if ref.adapter is not None:
        raise ModelError(f"{ref.display} is itself a LoRA adapter; training on top of an adapter is not supported",
                         "train on its base model, or merge it first (llmcli finetune --merge)")
    spec = ref.name if ref.origin == "store" and ref.name else os.path.abspath(ref.path)
    return BaseIdentity(spec, content_hash(ref), stamp(ref))


def check_base(rec, base: ModelRef) -> None:
    """Refuse a base whose content changed since the adapter was trained."""
    try:
        if stamp(base) == rec.base_stamp:
            return
        same = content_hash(base) == rec.base_sha256
    except OSError as e:
        raise ModelError(f"cannot read the base model of adapter {rec.name!r} ({base.path}): {e.strerror}") from None
    if not same:
        raise ModelError(f"the base model of adapter {rec.name!r} changed since it was trained ({rec.base}: sha256 "
                         "differs)", f"train the adapter again, or `llmcli models rm {rec.name}`")


def folder_files(folder: Path):
    from llmcli.store.records import StoredFile

    return tuple(StoredFile(f.name, str(f), f.stat().st_size) for f in sorted(folder.iterdir()) if f.is_file())


def remove_folder(path: str) -> None:
    """An adapter's own folder (inside the data dir); never raises."""
    shutil.rmtree(path, ignore_errors=True)


def adapter_ref(store, rec, reg) -> ModelRef:
    """An adapter as its base model's ref with the adapter folder on top; the base must still be there
    and unchanged."""
    from llmcli.store.refs import ref_from_path

    if not Path(rec.path).is_dir():
        raise ModelError(f"adapter {rec.name!r} is registered but its folder is gone ({rec.path})",
                         f"train it again, or run `llmcli models rm {rec.name}`")
    base_rec = reg.get(rec.base)
    if base_rec is not None and base_rec.kind != "adapter":
        base = store.ref(base_rec, reg)
    elif os.path.isabs(rec.base) and os.path.lexists(rec.base):
        base = ref_from_path(Path(rec.base))
    else:
        raise ModelError(f"the base model {rec.base!r} of adapter {rec.name!r} is missing",
                         "pull or import the base model again under that name, or train the adapter again")
    check_base(rec, base)
    return ModelRef(base.path, base.format, rec.name, "store", adapter=Path(rec.path),
                    extra={"record": rec, "base": base})


def add(store, name: str, staged: Path, base: BaseIdentity, training: dict):
    import re

    from llmcli.config import data_dir
    from llmcli.store.records import ModelRecord, validate_name

    validate_name(name)
    final = data_dir() / "adapters" / f"{re.sub(r'[^A-Za-z0-9._-]+', '-', name)}-{staged.name[-8:]}"
    try:
        os.replace(staged, final)
        files = folder_files(final)
        rec = ModelRecord(name, "adapter", path=str(final), files=files, size=sum(f.size for f in files),
                          base=base.spec, base_sha256=base.sha256, base_stamp=base.stamp, training=training)
        replaced = store._register(rec)
    except BaseException:
        remove_folder(str(final))
        raise
    if replaced is not None and replaced.kind == "adapter" and replaced.path != str(final):
        remove_folder(replaced.path)
    return store.find(name), replaced
