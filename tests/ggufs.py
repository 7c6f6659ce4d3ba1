"""Small GGUF files for store tests, written with the gguf package (real headers, real tensor
data), and hostile variants: a header whose counts the file cannot hold, a cut-short copy."""

from __future__ import annotations

import struct
from pathlib import Path


def tiny_gguf(path: Path, values: int = 256, arch: str = "llama") -> Path:
    """A valid GGUF with one f32 tensor of ``values`` elements (no model llama.cpp could run)."""
    import numpy as np
    from gguf import GGUFWriter

    w = GGUFWriter(str(path), arch)
    w.add_context_length(128)
    w.add_tensor("token_embd.weight", np.arange(values, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def huge_counts(path: Path, tensors: int = 0, kv: int = 0) -> Path:
    """A GGUF v3 header claiming ``tensors`` tensors and ``kv`` keys, followed by 64 zero bytes."""
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, tensors, kv) + bytes(64))
    return path


def truncated(src: Path, dst: Path, keep: float = 0.5) -> Path:
    """The first ``keep`` of ``src``: the header intact, the tensor data cut short."""
    data = Path(src).read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst
