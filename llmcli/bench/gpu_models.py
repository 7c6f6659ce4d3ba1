"""Randomly initialised Llama-architecture models for the GPU check: speed does not depend on
trained weights, so the check needs no model files and no network — only these configs and
SmolLM2's tokenizer, kept in the package (``smollm2_tokenizer/``, 1.5 MB, extracted from the
SmolLM2 GGUF by llmcli's own conversion).

Every config uses the tokenizer's vocabulary (49152), so the 1B and 8B models are a little
smaller than Llama 3.2 1B / Llama 3.1 8B (128256-token vocabulary); the layer shapes are theirs.
"""

from __future__ import annotations

from pathlib import Path

TOKENIZER_DIR = Path(__file__).with_name("smollm2_tokenizer")
VOCAB = 49152

_COMMON = dict(model_type="llama", vocab_size=VOCAB, bos_token_id=1, eos_token_id=2, pad_token_id=2,
               rms_norm_eps=1e-5, hidden_act="silu", attention_bias=False, mlp_bias=False,
               max_position_embeddings=8192)

CONFIGS = {
    # HuggingFaceTB/SmolLM2-135M-Instruct's config
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, head_dim=64, tie_word_embeddings=True, rope_theta=100000.0),
    # Llama 3.2 1B's layer shapes
    "llama-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                     num_key_value_heads=8, head_dim=64, tie_word_embeddings=True, rope_theta=500000.0),
    # Llama 3.1 8B's layer shapes
    "llama-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                     num_key_value_heads=8, head_dim=128, tie_word_embeddings=False, rope_theta=500000.0),
    # for CPU tests of the same code paths
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, tie_word_embeddings=True, rope_theta=10000.0),
}


# For correctness tests: with the default init (std 0.02) and tied embeddings, the residual stream
# is mostly the input token's embedding, so greedy decoding repeats one token and a test comparing
# two decoders would compare "30, 30, 30, …". Untied, with std 0.1, the ids vary and the top-2
# logit gap is ≈0.4, far above float32 rounding differences between two correct decoders.
VARIED = dict(initializer_range=0.1, tie_word_embeddings=False)


def llama_config(name: str, **overrides):
    from transformers import LlamaConfig

    if name not in CONFIGS:
        raise KeyError(f"unknown model config {name!r}; choose from {', '.join(CONFIGS)}")
    return LlamaConfig(**{**_COMMON, **CONFIGS[name], **overrides})


def parameter_count(name: str) -> int:
    """Parameters of a config, by arithmetic (no model built)."""
    c = {**_COMMON, **CONFIGS[name]}
    h, layers, hd = c["hidden_size"], c["num_hidden_layers"], c["head_dim"]
    attn = h * hd * (2 * c["num_attention_heads"] + 2 * c["num_key_value_heads"])
    mlp = 3 * h * c["intermediate_size"]
    per_layer = attn + mlp + 2 * h
    embed = VOCAB * h * (1 if c["tie_word_embeddings"] else 2)
    return layers * per_layer + embed + h


def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(TOKENIZER_DIR))


def build(name: str, device: str, dtype: str, seed: int = 0, **overrides):
    """(model, tokenizer): config ``name`` with random weights, built directly on ``device`` in
    ``dtype`` (an 8B model never passes through CPU memory). The same seed gives the same weights."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    if device.startswith("cuda"):
        torch.cuda.manual_seed_all(seed)
    with torch.device(device):
        model = LlamaForCausalLM._from_config(llama_config(name, **overrides), dtype=getattr(torch, dtype),
                                              attn_implementation="sdpa")
    model.eval()
    model.generation_config.pad_token_id = 2
    return model, tokenizer()


def save(name: str, folder: Path, seed: int = 0, **overrides) -> Path:
    """An HF folder (safetensors + config + the tokenizer) of config ``name``'s random model, for
    tests that run the real CLI on it."""
    import shutil

    model, _ = build(name, "cpu", "float32", seed, **overrides)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    for f in TOKENIZER_DIR.iterdir():
        shutil.copy(f, folder / f.name)
    return folder
