"""What a model argument resolves to, and cheap checks that a path really is a model."""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from llmcli.errors import ModelError

GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class ModelRef:
    path: Path  # a .gguf file, or an HF-format folder
    format: str  # "gguf" | "hf"
    name: str | None = None  # store name or alias, when it came from the store
    origin: str = "path"  # "path" | "store" | "embedded" | "config"
    adapter: Path | None = None  # a LoRA adapter folder (llmcli finetune) applied on top of the model at path
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def display(self) -> str:
        return self.name or str(self.path)


def check_gguf_file(path: Path) -> None:
    """Fail with a clear message before llama.cpp prints pages of C logs: the magic bytes, and the
    header's tensor and key counts against the file size (the same check `models show` makes)."""
    from llmcli.store.metadata import HEAD, check_counts

    try:
        with path.open("rb") as f:
            head = f.read(HEAD.size)
            size = os.fstat(f.fileno()).st_size
    except IsADirectoryError:
        raise ModelError(f"{path} is a directory, not a GGUF file") from None
    except OSError as e:
        raise ModelError(f"cannot read {path}: {e.strerror}") from None
    if head[:4] != GGUF_MAGIC:
        raise ModelError(f"{path} is not a GGUF model file (wrong magic bytes)",
                         "pass a .gguf file or a Hugging Face model folder")
    if len(head) == HEAD.size:
        _, version, n_tensors, n_kv = HEAD.unpack(head)
        if version >= 2:
            check_counts(path, n_tensors, n_kv, size)


def _not_a_model(path: Path) -> ModelError:
    """Why an existing path that is neither a file nor a folder cannot be a model, without opening
    it (opening a FIFO would block until a writer appears)."""
    try:
        st = os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return ModelError(f"{path} is a symlink loop, not a model", "point -m at the model file itself")
        if os.path.islink(path):
            return ModelError(f"{path} is a broken symlink (to {os.readlink(path)})",
                              "the file it points at is gone; pass the model file itself")
        if e.errno == errno.ENOENT:
            return ModelError(f"model not found: {path}")
        return ModelError(f"cannot read {path}: {e.strerror}")
    kinds = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))
    what = next((w for test, w in kinds if test(st.st_mode)), "not a regular file")
    return ModelError(f"{path} is {what}, not a model file", "pass a .gguf file or an HF-format model folder")


def ref_from_path(path: Path, origin: str = "path", name: str | None = None) -> ModelRef:
    """Classify an existing path as a GGUF file or an HF-format folder."""
    if path.is_dir():
        if (path / "config.json").is_file():
            return ModelRef(path, "hf", name, origin)
        ggufs = sorted(p for p in path.glob("*.gguf") if p.is_file())
        if len(ggufs) == 1:
            check_gguf_file(ggufs[0])
            return ModelRef(ggufs[0], "gguf", name, origin)
        if ggufs:
            listed = ", ".join(g.name for g in ggufs[:6])
            raise ModelError(f"{path} holds several GGUF files ({listed})", "pass the file you want with -m")
        raise ModelError(f"{path} is not a model folder (no config.json and no .gguf file)",
                         "pass a .gguf file or a folder with config.json + safetensors")
    if path.is_file():
        check_gguf_file(path)
        return ModelRef(path, "gguf", name, origin)
    raise _not_a_model(path)
