"""The trained adapter in the forms each backend reads.

- peft's own folder (``adapter_config.json`` + ``adapter_model.safetensors``): the torch backend.
- A GGUF LoRA, the format llama.cpp's ``convert_lora_to_gguf.py`` writes and its adapter API
  (``llama_adapter_lora_init``) reads: ``general.type = adapter``, ``adapter.type = lora``,
  ``adapter.lora.alpha``, and per adapted weight ``<gguf name>.lora_a`` (rank × in) and
  ``.lora_b`` (out × rank) in f32. HF → GGUF tensor names come from the ``gguf`` package's
  ``TensorNameMap`` (the table llama.cpp's converter uses); the only layout change is the one
  llama.cpp's Llama converter makes to the base model: the rows of q and k are permuted for its
  rope, so ``lora_b`` (whose rows are output rows) gets the same permutation.
- ``merge``: the base with the adapter folded in, as a standalone HF folder.
"""

from __future__ import annotations

from pathlib import Path

from llmcli.errors import LlmcliError

# model_type -> the gguf package's MODEL_ARCH name; only families whose HF → GGUF conversion is a
# pure renaming apart from the q/k permutation handled below.
GGUF_ARCHS = {"llama": "LLAMA", "mistral": "LLAMA"}


def gguf_supported(model_type: str) -> bool:
    return model_type in GGUF_ARCHS


def _permute(weights, n_head: int):
    """llama.cpp's ``LlamaModel.permute`` (convert_hf_to_gguf.py), on the output rows."""
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def write_gguf_lora(state: dict, config, alpha: float, out: Path) -> int:
    """Write peft's adapter ``state`` (``get_peft_model_state_dict``) as a GGUF LoRA at ``out``;
    returns the number of adapted weights."""
    import gguf
    import numpy as np

    arch_name = GGUF_ARCHS.get(config.model_type)
    if arch_name is None:
        raise LlmcliError(f"no GGUF LoRA export for model type {config.model_type!r}")
    arch = getattr(gguf.MODEL_ARCH, arch_name)
    names = gguf.get_tensor_name_map(arch, config.num_hidden_layers)
    n_head = config.num_attention_heads
    n_kv = getattr(config, "num_key_value_heads", None) or n_head
    pairs: dict[str, dict[str, object]] = {}
    for key, tensor in state.items():
        hf = key.removeprefix("base_model.model.")
        for part in ("A", "B"):
            tag = f".lora_{part}.weight"
            if hf.endswith(tag):
                pairs.setdefault(hf[: -len(tag)], {})[part] = tensor.detach().float().cpu()
    writer = gguf.GGUFWriter(str(out), gguf.MODEL_ARCH_NAMES[arch])
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
    for base in sorted(pairs):
        a, b = pairs[base]["A"], pairs[base]["B"]
        name = names.get_name(base + ".weight", try_suffixes=(".weight",))
        if name is None:
            raise LlmcliError(f"no GGUF name for the adapted layer {base}")
        if base.endswith("q_proj"):
            b = _permute(b, n_head)
        elif base.endswith("k_proj"):
            b = _permute(b, n_kv)
        writer.add_tensor(name + ".lora_a", np.ascontiguousarray(a.numpy(), dtype=np.float32))
        writer.add_tensor(name + ".lora_b", np.ascontiguousarray(b.numpy(), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return len(pairs)


def merge(peft_model, out: Path) -> None:
    """The base with the adapter folded into its weights, saved as an HF folder (safetensors); the
    caller adds the tokenizer files."""
    merged = peft_model.merge_and_unload()
    merged.save_pretrained(str(out), safe_serialization=True)
