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


def with_chat_template(src: Path, dst: Path, template: str) -> Path:
    """A copy of the GGUF ``src`` whose chat template is ``template`` (the gguf package's own
    metadata-rewriting code, as its gguf-new-metadata script uses it)."""
    import gguf
    from gguf.scripts.gguf_new_metadata import MetadataDetails, copy_with_new_metadata

    reader = gguf.GGUFReader(str(src), "r")
    arch = reader.get_field(gguf.Keys.General.ARCHITECTURE).contents()
    writer = gguf.GGUFWriter(str(dst), arch=arch, endianess=reader.endianess)
    new = {gguf.Keys.Tokenizer.CHAT_TEMPLATE: MetadataDetails(gguf.GGUFValueType.STRING, template)}
    copy_with_new_metadata(reader, writer, new, [])
    return dst


_TURNS = ("{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}")
# Qwen3's switch: enable_thinking=false writes an empty thinking block into the generation prompt.
QWEN3_STYLE = _TURNS + ("{% if enable_thinking is defined and enable_thinking is false %}"
                        "{{ '<think>\\n\\n</think>\\n\\n' }}{% endif %}{% endif %}")
# A generation prompt that opens the thinking block itself (the model continues inside it).
THINK_OPEN = _TURNS + "{{ '<think>\\n' }}{% endif %}"
