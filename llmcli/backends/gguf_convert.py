"""GGUF → HF-format folder, converted once and cached.

transformers can load a GGUF (dequantized to fp32), but on every run it spends ~20 s
dequantizing and ~7 s rebuilding the tokenizer. We do that once per GGUF and keep the
result — safetensors + config + a *corrected* tokenizer — under
``cache_dir()/converted/<name>-<key>/``; later runs load that folder in about a second.

The tokenizer correction: transformers' GGUF tokenizer conversion ignores (or only
partly knows) ``tokenizer.ggml.pre``, the pre-tokenizer llama.cpp applies. For SmolLM2
(``smollm``) it drops the individual-digits split, so token ids differ from llama.cpp
(and from the original tokenizer). ``PRE_TOKENIZERS`` maps the GGUF names we support to
the equivalent HF pre-tokenizer; each entry is tested against llama.cpp itself.

The cache key is the GGUF's identity (size + sampled content), so a copied file reuses its
conversion and a changed file gets a new one; ``llmcli cache`` lists and removes stale ones.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llmcli.errors import ModelError
from llmcli.fileio import WriteError, atomic_write

FORMAT_VERSION = 1  # bump when the conversion output changes: older folders become stale
MANIFEST = "llmcli-conversion.json"
_SAMPLE = 64 * 1024
_EDGE = 1024 * 1024

# --- the pre-tokenizer table -----------------------------------------------------------------------

# llama.cpp's split expressions (src/llama-vocab.cpp), written as HF `Split` regexes.
GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
DEFAULT_SPLITS = (r"[\p{P}\$\+<=>\^~\|]+", GPT2_SPLIT, r"\p{N}+", r"[0-9][0-9][0-9]")


def _byte_level(use_regex: bool):
    from tokenizers import pre_tokenizers

    return pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=use_regex)


def _splits_then_bytes(*regexes: str):
    from tokenizers import Regex, pre_tokenizers

    return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(r), behavior="isolated") for r in regexes]
                                   + [_byte_level(False)])


def _individual_digits_gpt2():
    from tokenizers import pre_tokenizers

    return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), _byte_level(True)])


@dataclass(frozen=True)
class PreTokenizer:
    """How llama.cpp pre-tokenizes for one family of ``tokenizer.ggml.pre`` names."""

    family: str
    build: Callable[[], object]  # -> tokenizers.pre_tokenizers.PreTokenizer
    ignore_merges: bool = False  # llama.cpp takes a word that is in the vocabulary whole (llama3)


_FAMILIES = {
    # individual digits, then the GPT-2 split
    "smollm": PreTokenizer("smollm", _individual_digits_gpt2),
    # the GPT-2 split alone
    "gpt-2": PreTokenizer("gpt-2", lambda: _byte_level(True)),
    # llama.cpp's fallback for BPE vocabularies
    "default": PreTokenizer("default", lambda: _splits_then_bytes(*DEFAULT_SPLITS)),
    "llama3": PreTokenizer("llama3", lambda: _splits_then_bytes(LLAMA3_SPLIT), ignore_merges=True),
    "qwen2": PreTokenizer("qwen2", lambda: _splits_then_bytes(QWEN2_SPLIT)),
}

# GGUF `tokenizer.ggml.pre` name -> family. Only names whose llama.cpp behaviour is tested.
PRE_TOKENIZERS: dict[str, PreTokenizer] = {
    **{n: _FAMILIES["smollm"] for n in ("smollm", "starcoder", "refact", "command-r", "codeshell")},
    **{n: _FAMILIES["gpt-2"] for n in ("gpt-2", "phi-2", "jina-es", "jina-de")},
    "default": _FAMILIES["default"],
    **{n: _FAMILIES["llama3"] for n in ("llama3", "llama-v3", "llama-bpe", "falcon3")},
    **{n: _FAMILIES["qwen2"] for n in ("qwen2", "deepseek-r1-qwen")},
}


def fix_pre_tokenizer(tokenizer, pre: str | None, model_kind: str | None,
                      warn: Callable[[str], None] | None = None) -> str:
    """Make a converted ``tokenizers.Tokenizer`` pre-tokenize like llama.cpp does.

    Returns what was done: "fixed:<family>", "not-bpe" (sentencepiece etc.: the GGUF's
    pre name does not apply) or "unknown". Unknown BPE names are left as transformers
    built them, with a warning, because ids may then differ from llama.cpp's."""
    if model_kind != "gpt2":
        return "not-bpe"
    entry = PRE_TOKENIZERS.get(pre or "default")
    if entry is None:
        if warn is not None:
            warn(f"unknown GGUF pre-tokenizer {pre!r}: kept transformers' conversion, so token ids may differ "
                 f"from llama.cpp's (known: {', '.join(sorted(PRE_TOKENIZERS))})")
        return "unknown"
    tokenizer.pre_tokenizer = entry.build()
    model = tokenizer.model
    if hasattr(model, "ignore_merges"):
        model.ignore_merges = entry.ignore_merges
    return f"fixed:{entry.family}"


# --- identity and cache layout ---------------------------------------------------------------------

def gguf_identity(path: Path) -> str:
    """A content key for a GGUF without reading all of it: its size, its first and last MiB
    (the metadata and the end of the weights) and 32 evenly spaced 64 KiB samples."""
    size = path.stat().st_size
    h = hashlib.sha256(f"gguf:{size}".encode())
    with path.open("rb") as f:
        h.update(f.read(_EDGE))
        if size > 2 * _EDGE:
            for i in range(1, 33):
                f.seek(_EDGE + (size - 2 * _EDGE) * i // 34)
                h.update(f.read(_SAMPLE))
            f.seek(size - _EDGE)
            h.update(f.read(_EDGE))
    return h.hexdigest()[:20]


def converted_root(cache: Path) -> Path:
    return cache / "converted"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:60] or "model"


def target_dir(gguf: Path, cache: Path, key: str | None = None) -> Path:
    return converted_root(cache) / f"{_slug(gguf.stem)}-{key or gguf_identity(gguf)}"


def find_converted(gguf: Path, cache: Path, key: str | None = None) -> Path | None:
    """A complete conversion of this GGUF's content, whatever the file was called then."""
    key = key or gguf_identity(gguf)
    preferred = target_dir(gguf, cache, key)
    if _complete(preferred):
        return preferred
    root = converted_root(cache)
    if root.is_dir():
        for d in sorted(root.glob(f"*-{key}")):
            if not d.name.startswith(".tmp-") and _complete(d):
                return d
    return None


def _complete(d: Path) -> bool:
    m = d / MANIFEST
    if not m.is_file():
        return False
    try:
        return json.loads(m.read_text(encoding="utf-8")).get("format") == FORMAT_VERSION
    except (OSError, ValueError):
        return False


def _read_gguf_fields(gguf: Path) -> dict:
    import gguf as gguf_pkg

    try:
        reader = gguf_pkg.GGUFReader(str(gguf))
    except (ValueError, OSError) as e:
        raise ModelError(f"cannot read the GGUF metadata of {gguf}: {e}") from None
    out = {}
    for key in ("general.architecture", "tokenizer.ggml.model", "tokenizer.ggml.pre", "general.name"):
        f = reader.fields.get(key)
        if f is not None:
            out[key] = f.contents()
    return out


def ensure_converted(gguf: Path, cache: Path, *, notify: Callable[[str], None], quiet_libs: bool = True) -> Path:
    """The HF folder for ``gguf``, converting it first when it is not cached yet."""
    gguf = Path(gguf).resolve()
    key = gguf_identity(gguf)
    found = find_converted(gguf, cache, key)
    if found is not None:
        _remember_source(found, gguf)
        return found
    final = target_dir(gguf, cache, key)
    t0 = time.perf_counter()
    notify(f"converting {gguf.name} for the torch backend (once; cached in {final}) …")
    meta = _read_gguf_fields(gguf)
    _check_architecture(meta.get("general.architecture"), gguf)
    root = converted_root(cache)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        pre_status = _convert_into(gguf, tmp, meta, notify, quiet_libs)
        manifest = {
            "format": FORMAT_VERSION,
            "source": str(gguf),
            "source_size": gguf.stat().st_size,
            "key": key,
            "architecture": meta.get("general.architecture"),
            "pre_tokenizer": meta.get("tokenizer.ggml.pre"),
            "pre_tokenizer_fix": pre_status,
            "converted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "transformers": _transformers_version(),
        }
        atomic_write(tmp / MANIFEST, json.dumps(manifest, indent=2) + "\n", what="the conversion manifest")
        try:
            os.rename(tmp, final)
        except OSError:
            if not _complete(final):  # not a concurrent conversion that won the race
                shutil.rmtree(final, ignore_errors=True)
                os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    notify(f"converted {gguf.name} in {time.perf_counter() - t0:.1f} s")
    return final


def _remember_source(d: Path, gguf: Path) -> None:
    """A copy of a converted GGUF reuses its conversion: record the path seen last, so the
    conversion is not reported stale when the original file is deleted."""
    m = d / MANIFEST
    try:
        data = json.loads(m.read_text(encoding="utf-8"))
        if data.get("source") != str(gguf):
            data["source"] = str(gguf)
            atomic_write(m, json.dumps(data, indent=2) + "\n", what="the conversion manifest")
    except (OSError, ValueError, WriteError):
        pass  # bookkeeping only: at worst `cache list` calls the conversion stale later


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


def _check_architecture(arch: str | None, gguf: Path) -> None:
    try:
        from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES
    except ImportError:  # layout changed: let the loader decide
        return
    if arch and arch not in GGUF_SUPPORTED_ARCHITECTURES:
        raise ModelError(f"transformers {_transformers_version()} cannot load GGUF architecture {arch!r} "
                         f"({gguf.name})", "use the llama.cpp backend for this file (--backend llama.cpp)")


def _convert_into(gguf: Path, out: Path, meta: dict, notify, quiet_libs: bool) -> str:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmcli.backends.torch_env import quiet_transformers

    with quiet_transformers(quiet_libs):
        try:
            tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        except (ValueError, KeyError, OSError) as e:
            raise ModelError(f"transformers could not convert the tokenizer of {gguf.name}: {e}",
                             "use the llama.cpp backend for this file") from None
        status = fix_pre_tokenizer(tok.backend_tokenizer, meta.get("tokenizer.ggml.pre"),
                                   meta.get("tokenizer.ggml.model"), warn=lambda m: notify("warning: " + m))
        try:
            # the GGUF loader draws its own tqdm bar on stderr; our notice says what happens
            with contextlib.redirect_stderr(io.StringIO()) if quiet_libs else contextlib.nullcontext():
                model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                             dtype=torch.float32)
        except (ValueError, KeyError, OSError, NotImplementedError) as e:
            raise ModelError(f"transformers could not load the weights of {gguf.name}: {e}",
                             "use the llama.cpp backend for this file") from None
        # save_pretrained refuses a "gguf-quantized" model; the weights are plain fp32 by now.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        out.mkdir(parents=True)
        model.save_pretrained(str(out))
        tok.save_pretrained(str(out))
    return status


# --- listing and cleaning --------------------------------------------------------------------------

@dataclass
class Conversion:
    path: Path
    source: str | None
    size_bytes: int
    status: str  # "ok" | "stale: <why>" | "incomplete"
    manifest: dict

    @property
    def stale(self) -> bool:
        return self.status != "ok"


def _dir_size(d: Path) -> int:
    return sum(p.stat().st_size for p in d.rglob("*") if p.is_file())


def list_conversions(cache: Path, *, check_sources: bool = True) -> list[Conversion]:
    root = converted_root(cache)
    if not root.is_dir():
        return []
    out = []
    for d in sorted(root.iterdir()):
        if not d.is_dir():
            continue
        manifest: dict = {}
        if d.name.startswith(".tmp-"):
            status = "incomplete"
        else:
            try:
                manifest = json.loads((d / MANIFEST).read_text(encoding="utf-8"))
                status = _status(manifest, d, check_sources)
            except (OSError, ValueError):
                status = "incomplete"
        out.append(Conversion(d, manifest.get("source"), _dir_size(d), status, manifest))
    return out


def _status(manifest: dict, d: Path, check_sources: bool) -> str:
    if manifest.get("format") != FORMAT_VERSION:
        return "stale: made by an older llmcli"
    if not check_sources:
        return "ok"
    src = Path(manifest.get("source") or "")
    if not src.is_file():
        return "stale: source GGUF is gone"
    try:
        if gguf_identity(src) != manifest.get("key"):
            return "stale: source GGUF has changed"
    except OSError:
        return "stale: source GGUF is unreadable"
    return "ok"


def remove_conversions(cache: Path, *, everything: bool = False) -> list[Conversion]:
    removed = []
    for c in list_conversions(cache):
        if everything or c.stale:
            shutil.rmtree(c.path, ignore_errors=True)
            removed.append(c)
    return removed
