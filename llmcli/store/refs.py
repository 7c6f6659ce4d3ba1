"""What a model argument resolves to, and cheap checks that a path really is a model."""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from llmcli.errors import ModelError, UsageError

GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class ModelRef:
    path: Path | None  # a .gguf file, or an HF-format folder; None for a server
    format: str  # "gguf" | "hf" | "remote"
    name: str | None = None  # store name or alias, when it came from the store
    origin: str = "path"  # "path" | "store" | "embedded" | "config"
    adapter: Path | None = None  # a LoRA adapter folder (llmcli finetune) applied on top of the model at path
    extra: dict = field(default_factory=dict, compare=False)
    url: str | None = None  # remote: the server's OpenAI API base URL (never with credentials)
    model_id: str | None = None  # remote: the server's model id (None: the server's only model)

    @property
    def location(self) -> str:
        """The path, or for a server the model reference as the user spells it (URL#MODEL_ID)."""
        if self.format == "remote":
            return self.url + (f"#{self.model_id}" if self.model_id else "")
        return str(self.path)

    @property
    def display(self) -> str:
        return self.name or self.location


URL_SCHEMES = ("http://", "https://")


def is_model_url(spec: str) -> bool:
    return spec[:8].lower().startswith(URL_SCHEMES)


def parse_model_url(spec: str) -> tuple[str, str | None]:
    """``http://host:8000/v1#Model-Id`` -> (base URL, model id or None). The base URL is the
    OpenAI API root; a bare ``http://host:8000`` gets ``/v1``, the path every engine serves."""
    try:
        parts = urlsplit(spec)
        port = parts.port  # raises ValueError for a port out of range
    except ValueError as e:
        raise UsageError(f"invalid model URL {spec!r}: {e}", "write it as http://HOST:PORT/v1[#MODEL_ID]") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise UsageError(f"invalid model URL {spec!r}: no host", "write it as http://HOST:PORT/v1[#MODEL_ID]")
    if parts.username is not None or parts.password is not None:
        # A key in the URL would be shown by -v, saved in sessions and the registry.
        raise UsageError("the model URL contains credentials",
                         "remove user:password@ from the URL and pass the key with --api-key or LLMCLI_API_KEY")
    path = parts.path.rstrip("/") or "/v1"
    netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    if port is not None:
        netloc += f":{port}"
    base = f"{parts.scheme.lower()}://{netloc}{path}" + (f"?{parts.query}" if parts.query else "")
    model_id = unquote(parts.fragment) if parts.fragment else None
    return base, model_id


def remote_ref(spec: str, *, origin: str = "path", name: str | None = None) -> ModelRef:
    url, model_id = parse_model_url(spec)
    return ModelRef(None, "remote", name, origin, url=url, model_id=model_id)


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
