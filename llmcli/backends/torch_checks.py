"""Checks on an HF-format model folder that need neither torch nor transformers: weights format
(safetensors, or pickle only when allowed), config.json, and whether the architecture can
generate text. Pure where it can be (transformers' tables are passed in)."""

from __future__ import annotations

import json
from pathlib import Path

from llmcli.errors import ModelError
from llmcli.formats import PICKLE_SUFFIXES


def check_hf_folder(folder: Path, *, allow_pickle: bool) -> str:
    """"safetensors" or "pickle" (allowed); a ModelError for anything else."""
    if not folder.is_dir():
        raise ModelError(f"{folder} is not a folder")
    if not (folder / "config.json").is_file():
        raise ModelError(f"{folder} has no config.json, so it is not an HF-format model folder",
                         "pass a folder with config.json + *.safetensors, or a .gguf file")
    if any(folder.glob("*.safetensors")) or (folder / "model.safetensors.index.json").is_file():
        return "safetensors"
    pickles = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(PICKLE_SUFFIXES)
                     and p.name != "training_args.bin")
    if pickles:
        if not allow_pickle:
            raise ModelError(f"{folder} has only pickle weights ({', '.join(pickles[:3])}), and loading pickle "
                             "can run arbitrary code",
                             "pass --allow-pickle if you trust this model, or convert it to safetensors")
        return "pickle"
    raise ModelError(f"{folder} has no weights (*.safetensors)", "download the model's safetensors files")


def read_config(folder: Path) -> dict:
    try:
        data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ModelError(f"cannot read {folder / 'config.json'}: {e}") from None
    if not isinstance(data, dict):
        raise ModelError(f"{folder / 'config.json'} is not a JSON object")
    return data


def check_architecture(config: dict, *, known_types, causal_types, causal_names, masked_lm_types,
                       trust_remote_code: bool, transformers_version: str = "") -> None:
    """Refuse what transformers cannot build or what cannot generate text, in one line.

    Pure: the transformers tables are passed in (``known_types`` = CONFIG_MAPPING keys,
    ``causal_types``/``causal_names`` = model types/classes of the causal-LM auto mapping,
    ``masked_lm_types`` = model types with a masked-LM (encoder) head)."""
    model_type = config.get("model_type")
    remote = "auto_map" in config
    if remote and not trust_remote_code and model_type not in known_types:
        raise ModelError(f"this model ({model_type or 'custom'}) needs its own Python code from the model folder",
                         "pass --trust-remote-code if you trust its authors")
    if remote and trust_remote_code:
        return
    if not model_type:
        raise ModelError("config.json has no model_type, so transformers cannot tell the architecture")
    if model_type not in known_types:
        raise ModelError(f"transformers {transformers_version} does not know the model architecture {model_type!r}",
                         "upgrade transformers, or use a GGUF of this model with the llama.cpp backend")
    archs = config.get("architectures") or []
    if config.get("is_encoder_decoder"):
        raise ModelError(f"{archs[0] if archs else model_type} is an encoder-decoder model, not a text-generation "
                         "(decoder-only) model", "llmcli generates with causal language models (…ForCausalLM)")
    if archs:
        ok = any(a in causal_names or a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs)
    else:
        ok = model_type in causal_types and not (model_type in masked_lm_types and not config.get("is_decoder"))
    if not ok:
        raise ModelError(f"{archs[0] if archs else model_type} is not a text-generation model",
                         "llmcli generates with causal language models (…ForCausalLM / …LMHeadModel)")
