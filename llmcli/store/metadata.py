"""What a model is, read from its headers without loading weights: the GGUF header (key/values
and tensor infos, with the gguf package's type definitions), or an HF folder's config.json and
safetensors headers; plus an estimate of the memory a run needs.

gguf's ``GGUFReader`` parses every array element into numpy views (≈3 s for a 49k-token vocabulary),
so the header is walked here directly over an mmap: string arrays are skipped by their lengths
and numeric arrays by their size, which takes milliseconds and touches only the header pages.
"""

from __future__ import annotations

import json
import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path

from llmcli.errors import ModelError

SMALL_ARRAY = 16  # arrays longer than this are summarised as their length


GGML_MAX_DIMS = 4  # llama.cpp rejects tensors with more dimensions
DEFAULT_ALIGNMENT = 32  # GGUF's default for the start of tensor data
DAMAGED_HINT = "the file is damaged or not a GGUF model: download or copy it again"


@dataclass
class GgufHeader:
    version: int
    kv: dict
    tensors: list[tuple[str, tuple[int, ...], int]]  # name, shape, ggml type
    array_lengths: dict = field(default_factory=dict)  # key -> length, for summarised arrays
    offsets: list[int] = field(default_factory=list)  # per tensor, relative to the data section
    header_end: int = 0  # bytes up to the end of the tensor infos
    file_size: int = 0


HEAD = struct.Struct("<4sIQQ")  # magic, version, tensor count, key/value count (GGUF v2+)


def _damaged(path: Path, why: str) -> ModelError:
    return ModelError(f"{path} has a damaged GGUF header ({why})", DAMAGED_HINT)


def check_counts(path: Path, n_tensors: int, n_kv: int, size: int) -> None:
    """The smallest key/value takes 13 bytes and the smallest tensor info 24: counts the file
    cannot hold (a header claiming 2**62 tensors) are damage, found before looping over them."""
    if n_kv * 13 + n_tensors * 24 > size - HEAD.size:
        raise _damaged(path, f"it claims {n_tensors} tensors and {n_kv} keys, more than {size} bytes can hold")


def read_gguf_header(path: str | Path) -> GgufHeader:
    """The key/values and tensor infos, with every count and length checked against the bytes
    left in the file before it is used: a header claiming 2**62 tensors or keys fails at once."""
    from gguf import GGUF_MAGIC, GGUFValueType

    scalar = {
        GGUFValueType.UINT8: "<B", GGUFValueType.INT8: "<b", GGUFValueType.UINT16: "<H",
        GGUFValueType.INT16: "<h", GGUFValueType.UINT32: "<I", GGUFValueType.INT32: "<i",
        GGUFValueType.FLOAT32: "<f", GGUFValueType.BOOL: "<?", GGUFValueType.UINT64: "<Q",
        GGUFValueType.INT64: "<q", GGUFValueType.FLOAT64: "<d",
    }
    sizes = {k: struct.calcsize(v) for k, v in scalar.items()}
    path = Path(path)
    try:
        f = path.open("rb")
    except OSError as e:
        raise ModelError(f"cannot read {path}: {e.strerror}") from None
    with f:
        try:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:
            raise ModelError(f"{path} is empty, not a GGUF file") from None
        except OSError as e:
            raise ModelError(f"cannot read {path}: {e.strerror}") from None
        size = len(mm)
        try:
            pos = 0

            def need(n: int, what: str) -> None:
                if n < 0 or n > size - pos:
                    raise _damaged(path, f"{what} needs {n} bytes, {size - pos} are left in the file")

            def u(fmt: str):
                nonlocal pos
                v = struct.unpack_from(fmt, mm, pos)[0]
                pos += struct.calcsize(fmt)
                return v

            def string() -> str:
                nonlocal pos
                n = u("<Q")
                need(n, "a string")
                s = bytes(mm[pos:pos + n])
                pos += n
                return s.decode("utf-8", errors="replace")

            def value(t: int):
                t = GGUFValueType(t)
                if t == GGUFValueType.STRING:
                    return string()
                if t == GGUFValueType.ARRAY:
                    raise _damaged(path, "nested array")
                return u(scalar[t])

            magic = u("<I")
            if magic != GGUF_MAGIC:
                raise ModelError(f"{path} is not a GGUF file (wrong magic bytes)")
            version = u("<I")
            if version < 2:
                raise ModelError(f"{path} uses GGUF version {version}, which is too old to read")
            n_tensors = u("<Q")
            n_kv = u("<Q")
            check_counts(path, n_tensors, n_kv, size)
            kv: dict = {}
            lengths: dict = {}
            for _ in range(n_kv):
                key = string()
                t = u("<I")
                if t != GGUFValueType.ARRAY:
                    kv[key] = value(t)
                    continue
                it = GGUFValueType(u("<I"))
                n = u("<Q")
                if it == GGUFValueType.ARRAY:
                    raise _damaged(path, f"nested array in {key}")
                need(n * (8 if it == GGUFValueType.STRING else sizes.get(it, 1)), f"array {key}")
                if n <= SMALL_ARRAY:
                    kv[key] = [value(it) for _ in range(n)]
                    continue
                lengths[key] = n
                if it == GGUFValueType.STRING:
                    for _ in range(n):
                        k = struct.unpack_from("<Q", mm, pos)[0]
                        need(8 + k, f"a string in {key}")
                        pos += 8 + k
                else:
                    pos += n * sizes[it]
            tensors = []
            offsets = []
            for _ in range(n_tensors):
                name = string()
                n_dims = u("<I")
                if n_dims > GGML_MAX_DIMS:
                    raise _damaged(path, f"tensor {name} has {n_dims} dimensions")
                shape = struct.unpack_from(f"<{n_dims}Q", mm, pos)
                pos += 8 * n_dims
                ttype = u("<I")
                offsets.append(u("<Q"))
                tensors.append((name, tuple(shape), ttype))
            return GgufHeader(version, kv, tensors, lengths, offsets, pos, size)
        except (struct.error, ValueError, IndexError, OverflowError) as e:
            raise _damaged(path, str(e)) from None
        finally:
            mm.close()


def tensor_data_end(h: GgufHeader) -> int:
    """Where the last tensor's bytes end, from the header's offsets, shapes and types.

    Tensors of a type this gguf package does not know are counted by their offset only."""
    from gguf import GGML_QUANT_SIZES

    align = h.kv.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(align, int) or align <= 0:
        align = DEFAULT_ALIGNMENT
    start = -(-h.header_end // align) * align
    end = start if h.tensors else h.header_end
    for (_, shape, ttype), offset in zip(h.tensors, h.offsets):
        block, type_size = GGML_QUANT_SIZES.get(ttype, (1, 0))
        end = max(end, start + offset + _prod(shape) // block * type_size)
    return end


def check_gguf_fits(path: str | Path) -> GgufHeader:
    """The header, after checking that the tensor data it describes is all in the file."""
    h = read_gguf_header(path)
    end = tensor_data_end(h)
    if end > h.file_size:
        raise ModelError(f"{path} is truncated: its header describes {end} bytes of tensors, the file has "
                         f"{h.file_size}", "the download or copy was cut short: get the file again")
    return h


def _fmt_quant(file_type: int | None) -> str | None:
    if file_type is None:
        return None
    from gguf import LlamaFileType

    try:
        name = LlamaFileType(file_type).name
    except ValueError:
        return f"file type {file_type}"
    return name.removeprefix("MOSTLY_").replace("ALL_", "")


def _dominant_tensor_type(tensors) -> str | None:
    from gguf import GGMLQuantizationType

    counts: dict[int, int] = {}
    for _, shape, t in tensors:
        n = 1
        for d in shape:
            n *= d
        counts[t] = counts.get(t, 0) + n
    if not counts:
        return None
    t = max(counts, key=counts.get)
    try:
        return GGMLQuantizationType(t).name
    except ValueError:
        return str(t)


def _prod(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def kv_bytes_per_token(n_layers, n_kv_heads, k_dim, v_dim, elem_bytes=2) -> int | None:
    if not all(isinstance(x, int) and x > 0 for x in (n_layers, n_kv_heads, k_dim, v_dim)):
        return None
    return n_layers * n_kv_heads * (k_dim + v_dim) * elem_bytes


def memory_estimate(weights: int, kv_per_token: int | None, ctx_max: int | None, ctx_default: int | None) -> dict:
    """Weights (mmapped or loaded) + an f16 KV cache at the default and at the maximum context."""
    out = {"weights_bytes": weights, "kv_bytes_per_token": kv_per_token}
    if kv_per_token and ctx_default:
        out["default_ctx"] = ctx_default
        out["default_total_bytes"] = weights + kv_per_token * ctx_default
    if kv_per_token and ctx_max:
        out["max_ctx"] = ctx_max
        out["max_total_bytes"] = weights + kv_per_token * ctx_max
    return out


def _default_ctx(ctx_max: int | None) -> int | None:
    from llmcli.config import DEFAULT_CTX_CAP

    return min(ctx_max, DEFAULT_CTX_CAP) if ctx_max else DEFAULT_CTX_CAP


def template_preview(tpl, lines: int = 3) -> list[str]:
    if not isinstance(tpl, str) or not tpl.strip():
        return []
    return [ln[:100] for ln in tpl.strip().splitlines()[:lines]]


def gguf_metadata(paths: list[Path]) -> dict:
    """Metadata of a GGUF model (all parts of a split model)."""
    first = check_gguf_fits(paths[0])
    tensors = list(first.tensors)
    for p in paths[1:]:
        tensors += check_gguf_fits(p).tensors
    kv = first.kv
    arch = kv.get("general.architecture")
    a = f"{arch}." if arch else ""
    heads = kv.get(a + "attention.head_count")
    heads = heads[0] if isinstance(heads, list) else heads  # per-layer arrays in some models
    kv_heads = kv.get(a + "attention.head_count_kv", heads)
    kv_heads = max(kv_heads) if isinstance(kv_heads, list) and kv_heads else kv_heads
    emb = kv.get(a + "embedding_length")
    head_dim = emb // heads if isinstance(emb, int) and isinstance(heads, int) and heads else None
    k_dim = kv.get(a + "attention.key_length", head_dim)
    v_dim = kv.get(a + "attention.value_length", head_dim)
    layers = kv.get(a + "block_count")
    ctx = kv.get(a + "context_length")
    weights = sum(p.stat().st_size for p in paths)
    return {
        "format": "gguf",
        "architecture": arch,
        "model_name": kv.get("general.name"),
        "parameters": sum(_prod(s) for _, s, _ in tensors),
        "context_length": ctx,
        "layers": layers,
        "embedding_length": emb,
        "attention_heads": heads,
        "kv_heads": kv_heads,
        "file_type": _fmt_quant(kv.get("general.file_type")),
        "tensor_type": _dominant_tensor_type(tensors),
        "chat_template": template_preview(kv.get("tokenizer.chat_template")),
        "has_chat_template": bool(kv.get("tokenizer.chat_template")),
        "license": kv.get("general.license"),
        "vocab_size": kv.get(a + "vocab_size") or first.array_lengths.get("tokenizer.ggml.tokens"),
        "memory": memory_estimate(weights, kv_bytes_per_token(layers, kv_heads, k_dim, v_dim), ctx, _default_ctx(ctx)),
    }


def gguf_size(path: str | Path) -> tuple[int | None, int | None]:
    """(parameter count, f16 KV-cache bytes per token) of a GGUF, all parts of a split one, for
    the dispatch rule's GPU fit test; (None, None) when the headers cannot be read (llama.cpp
    then reports the damage in its own words)."""
    from llmcli.store.quant import split_info

    path = Path(path)
    paths = [path]
    info = split_info(path.name)
    if info is not None:
        stem = path.name[: -len(f"-{info[0]:05d}-of-{info[1]:05d}.gguf")]
        paths = [path.with_name(f"{stem}-{i:05d}-of-{info[1]:05d}.gguf") for i in range(1, info[1] + 1)]
    try:
        meta = gguf_metadata(paths)
    except (ModelError, OSError, ValueError):
        return None, None
    return meta["parameters"] or None, meta["memory"].get("kv_bytes_per_token")


def safetensors_header(path: Path) -> dict:
    with path.open("rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ModelError(f"{path} is not a safetensors file")
        n = int.from_bytes(raw, "little")
        if n > 100_000_000:
            raise ModelError(f"{path} has an implausible safetensors header")
        try:
            return json.loads(f.read(n))
        except ValueError:
            raise ModelError(f"{path} has a damaged safetensors header") from None


def hf_metadata(folder: Path) -> dict:
    """Metadata of an HF-format folder: config.json + safetensors headers (no tensor data read)."""
    try:
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot read {folder / 'config.json'}: {e}") from None
    text_cfg = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else cfg
    params = 0
    dtypes: dict[str, int] = {}
    weights = 0
    for st in sorted(folder.glob("*.safetensors")):
        weights += st.stat().st_size
        for name, info in safetensors_header(st).items():
            if name == "__metadata__" or not isinstance(info, dict):
                continue
            n = _prod(info.get("shape", []))
            params += n
            dtypes[info.get("dtype", "?")] = dtypes.get(info.get("dtype", "?"), 0) + n
    heads = text_cfg.get("num_attention_heads")
    kv_heads = text_cfg.get("num_key_value_heads", heads)
    hidden = text_cfg.get("hidden_size")
    head_dim = text_cfg.get("head_dim") or (hidden // heads if isinstance(hidden, int) and heads else None)
    layers = text_cfg.get("num_hidden_layers")
    ctx = text_cfg.get("max_position_embeddings")
    template = None
    tc = folder / "tokenizer_config.json"
    if tc.is_file():
        try:
            template = json.loads(tc.read_text(encoding="utf-8")).get("chat_template")
        except (OSError, ValueError):
            template = None
    if isinstance(template, list):  # named templates
        template = next((t.get("template") for t in template if isinstance(t, dict)), None)
    jinja = folder / "chat_template.jinja"
    if not template and jinja.is_file():
        template = jinja.read_text(encoding="utf-8", errors="replace")
    archs = cfg.get("architectures") or []
    return {
        "format": "hf",
        "architecture": cfg.get("model_type") or (archs[0] if archs else None),
        "model_name": archs[0] if archs else None,
        "parameters": params or None,
        "context_length": ctx,
        "layers": layers,
        "embedding_length": hidden,
        "attention_heads": heads,
        "kv_heads": kv_heads,
        "file_type": cfg.get("torch_dtype") or cfg.get("dtype"),
        "tensor_type": max(dtypes, key=dtypes.get) if dtypes else None,
        "chat_template": template_preview(template),
        "has_chat_template": bool(template),
        "license": None,
        "vocab_size": text_cfg.get("vocab_size"),
        "memory": memory_estimate(weights, kv_bytes_per_token(layers, kv_heads, head_dim, head_dim), ctx,
                                  _default_ctx(ctx)),
    }


def model_metadata(fmt: str, path: Path, parts: list[Path] | None = None) -> dict:
    if fmt == "gguf":
        return gguf_metadata(parts or [path])
    return hf_metadata(path)


def human_bytes(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def human_count(n: int | None) -> str:
    if not n:
        return "?"
    for unit, div in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return str(n)
