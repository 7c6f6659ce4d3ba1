"""Pure functions over a repository's file names: quant tags, split GGUF parts, which
files of an HF-format repository are worth downloading. No I/O, so they are unit-tested alone."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field

from llmcli import formats

# "model-00001-of-00003.gguf": llama.cpp's gguf-split naming.
SPLIT_RE = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)

# A quant name inside a file name: Q4_K_M, Q8_0, IQ4_XS, Q4_0_4_4, F16, BF16, MXFP4, TQ1_0,
# unsloth's UD-Q4_K_XL... bounded by separators so "Qwen3" or "Q4xyz" never match.
_QUANT_BODY = (r"(?:UD-)?(?:I?Q[1-8](?:_(?:[0-9]+|K|XXS|XS|S|M|L|XL|NL))*"
               r"|BF16|F16|F32|FP16|FP32|MXFP4(?:_MOE)?|TQ[12]_0)")
QUANT_RE = re.compile(rf"(?:^|(?<=[-._/\s]))({_QUANT_BODY})(?=$|[-._/\s])", re.IGNORECASE)

# Preference when a GGUF repo is pulled without a tag. Q4_K_M first, as llama.cpp's -hf
# does; then the nearest 4-bit quants; then slightly larger ones (better quality, still
# small); then 3-bit; then 8-bit and the unquantized exports, which are big.
DEFAULT_QUANT = "Q4_K_M"
QUANT_PREFERENCE = [
    "Q4_K_M", "Q4_K_S", "Q4_K_L", "Q4_K_XL", "IQ4_XS", "IQ4_NL", "Q4_0", "Q4_1",
    "Q5_K_M", "Q5_K_S", "Q5_K_L", "Q5_K_XL", "Q5_0", "Q5_1",
    "Q6_K", "Q6_K_L", "Q6_K_XL",
    "Q3_K_L", "Q3_K_M", "Q3_K_XL", "IQ3_M", "IQ3_S", "Q3_K_S", "IQ3_XS", "IQ3_XXS",
    "Q8_0", "Q8_K_XL",
    "Q2_K", "Q2_K_L", "Q2_K_XL", "IQ2_M", "IQ2_S", "IQ2_XS", "IQ2_XXS", "IQ1_M", "IQ1_S",
    "BF16", "F16", "FP16", "F32", "FP32",
]

# HF-format repositories: only what a safetensors model needs. Never pickle (.bin/.pt/.pth/.ckpt).
HF_ALLOWED = [
    "config.json", "generation_config.json",
    "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "tokenizer*.json",
    "special_tokens_map.json", "added_tokens.json", "vocab.json", "vocab.txt", "merges.txt",
    "chat_template.jinja", "chat_template.json", "preprocessor_config.json", "processor_config.json",
    "*.safetensors", "*.safetensors.index.json",
]
PICKLE_SUFFIXES = formats.PICKLE_SUFFIXES  # one list for the store and the torch backend


def quant_of(filename: str) -> str | None:
    """The quant tag of a GGUF file name, upper-cased (``UD-Q4_K_XL`` keeps its prefix), or None."""
    base = filename.rsplit("/", 1)[-1]
    base = SPLIT_RE.sub("", base)
    if base.lower().endswith(".gguf"):
        base = base[: -len(".gguf")]
    found = QUANT_RE.findall(base)
    return found[-1].upper() if found else None


def split_info(filename: str) -> tuple[int, int] | None:
    """(part, count) for ``…-00002-of-00003.gguf``, else None."""
    m = SPLIT_RE.search(filename)
    return (int(m.group(1)), int(m.group(2))) if m else None


def is_gguf(filename: str) -> bool:
    return filename.lower().endswith(".gguf")


def is_aux_gguf(filename: str) -> bool:
    """Multimodal projectors and imatrix files are not the model itself."""
    base = filename.rsplit("/", 1)[-1].lower()
    return base.startswith("mmproj") or "imatrix" in base


@dataclass
class GgufGroup:
    """One model in a GGUF repo: a single file, or all parts of a split GGUF."""

    quant: str | None
    files: list[str] = field(default_factory=list)  # sorted; the first is what llama.cpp opens
    expected_parts: int = 1

    @property
    def complete(self) -> bool:
        return len(self.files) == self.expected_parts

    @property
    def key(self) -> str:
        return group_key(self.files[0])


def group_key(filename: str) -> str:
    return SPLIT_RE.sub(".gguf", filename)


def gguf_groups(filenames: list[str]) -> list[GgufGroup]:
    """The model GGUFs of a repo, split parts gathered under one group, in name order."""
    groups: dict[str, GgufGroup] = {}
    for name in sorted(filenames):
        if not is_gguf(name) or is_aux_gguf(name):
            continue
        key = group_key(name)
        g = groups.setdefault(key, GgufGroup(quant_of(name)))
        g.files.append(name)
        info = split_info(name)
        if info:
            g.expected_parts = info[1]
    return list(groups.values())


def available_quants(groups: list[GgufGroup]) -> list[str]:
    seen = {g.quant for g in groups if g.quant}
    ranked = [q for q in QUANT_PREFERENCE if q in seen]
    return ranked + sorted(seen - set(ranked))


class QuantChoiceError(ValueError):
    """A pure-function failure; the caller turns it into a user-facing error."""

    def __init__(self, message: str, choices: list[str]):
        super().__init__(message)
        self.choices = choices


def pick_by_tag(groups: list[GgufGroup], tag: str) -> GgufGroup:
    """The group whose quant matches ``tag`` case-insensitively."""
    want = tag.upper()
    hits = [g for g in groups if g.quant == want]
    if not hits:
        # "Q4_K_XL" may be published as "UD-Q4_K_XL": accept the tag without the prefix.
        hits = [g for g in groups if g.quant and g.quant.split("-", 1)[-1] == want]
    if not hits:
        raise QuantChoiceError(f"no GGUF file for quant {tag!r}", available_quants(groups))
    if len(hits) > 1:
        raise QuantChoiceError(f"several GGUF models match quant {tag!r}", [g.files[0] for g in hits])
    return hits[0]


def pick_default(groups: list[GgufGroup]) -> tuple[GgufGroup, str]:
    """The group to pull when no tag is given, and a one-line reason for the user."""
    if not groups:
        raise QuantChoiceError("the repository has no GGUF model file", [])
    if len(groups) == 1:
        g = groups[0]
        return g, f"{g.quant or g.files[0]} is the only GGUF model in the repository"
    by_quant: dict[str, list[GgufGroup]] = {}
    for g in groups:
        if g.quant:
            by_quant.setdefault(g.quant, []).append(g)
    for rank, q in enumerate(QUANT_PREFERENCE):
        candidates = by_quant.get(q) or by_quant.get(f"UD-{q}")
        if not candidates:
            continue
        if len(candidates) > 1:
            raise QuantChoiceError(f"several GGUF models have quant {q}; name the file you want",
                                   [c.files[0] for c in candidates])
        if rank == 0:
            return candidates[0], f"{q} is the default quant (as llama.cpp's -hf picks it)"
        return candidates[0], (f"{DEFAULT_QUANT} is not in the repository; {q} is the closest available "
                               f"({_why(q)})")
    untagged = [g.files[0] for g in groups]
    raise QuantChoiceError("cannot tell which GGUF file to pull (no recognisable quant names)", untagged)


def _why(q: str) -> str:
    if q.startswith(("Q4", "IQ4")):
        return "same 4-bit size class"
    if q.startswith(("Q5", "Q6")):
        return "the next larger quant: a little bigger, a little better"
    if q.startswith(("Q3", "IQ3")):
        return "no 4- to 6-bit quant exists; the largest smaller one"
    if q.startswith("Q8"):
        return "no smaller quant exists"
    if q.startswith(("Q2", "IQ2", "IQ1")):
        return "only very small quants exist: expect lower quality"
    return "only unquantized weights exist: large download"


def hf_files(filenames: list[str]) -> list[str]:
    """Files of an HF-format repo to download: root-level config, tokenizer and safetensors."""
    out = []
    for name in filenames:
        if "/" in name:
            continue  # sub-folders hold onnx/, original/ (pickle) and other formats
        if name.lower().endswith(PICKLE_SUFFIXES):
            continue
        if any(fnmatch.fnmatchcase(name, pat) for pat in HF_ALLOWED):
            out.append(name)
    # Repositories like Mistral's ship the weights twice (model-0000N-of-M.safetensors for transformers
    # and consolidated.safetensors for their own runtime): keep the transformers set when it exists.
    if any(fnmatch.fnmatchcase(n, "model*.safetensors") for n in out):
        out = [n for n in out if not n.endswith(".safetensors") or n.startswith("model")]
    return sorted(out)


def parse_pull_spec(spec: str) -> tuple[str, str | None, str | None]:
    """``owner/repo[:TAG]`` or ``owner/repo/path/to/file.gguf`` -> (repo_id, tag, filename).

    Raises ValueError with a readable message."""
    s = spec.strip()
    for prefix in ("hf://", "https://huggingface.co/", "huggingface.co/", "hf.co/"):
        if s.lower().startswith(prefix):
            s = s[len(prefix):]
            break
    if "\x00" in s or not s:
        raise ValueError("empty repository name" if not s else "NUL byte in repository name")
    tag = None
    parts = s.split("/")
    if len(parts) == 2 and ":" in parts[1]:
        name, tag = parts[1].split(":", 1)
        parts[1] = name
        if not tag:
            raise ValueError(f"empty quant tag in {spec!r}")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise ValueError(f"{spec!r} is not a Hugging Face repository (expected owner/name)")
    repo_id = "/".join(parts[:2])
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*", repo_id) or ".." in repo_id:
        raise ValueError(f"{repo_id!r} is not a valid repository id")
    filename = None
    if len(parts) > 2:
        filename = "/".join(parts[2:])
        if any(p in ("", ".", "..") for p in parts[2:]):
            raise ValueError(f"invalid file path in {spec!r}")
    return repo_id, tag, filename
