"""The lean Llama decode step (``torch_lean``) computes what transformers' forward computes:
same greedy ids and logits on the real SmolLM2 and on tiny random Llamas with GQA and rope
scaling; models it cannot run exactly are left to transformers."""

from __future__ import annotations

import pytest

from llmcli.backends.base import Finish, Message, SamplingParams

torch = pytest.importorskip("torch")


def _tiny_llama(**overrides):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = dict(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=False,
               attn_implementation="sdpa")
    cfg.update(overrides)
    return LlamaForCausalLM(LlamaConfig(**cfg)).eval()


def _greedy(model, prompt: list[int], steps: int, step):
    """Greedy ids and per-step logits: the prompt through transformers' forward, then each token through
    ``step(token, position, cache)``."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([prompt]), cache=cache, use_cache=True).logits[0, -1]
        ids, all_logits = [], []
        for i in range(steps):
            tok = int(logits.argmax())
            ids.append(tok)
            logits = step(tok, len(prompt) + i, cache)
            all_logits.append(logits.clone())
    return ids, all_logits


def _transformers_greedy(model, prompt: list[int], steps: int):
    """Reference: transformers' own forward for every token."""
    def step(tok, pos, cache):
        return model(input_ids=torch.tensor([[tok]]), position_ids=torch.tensor([[pos]]), cache=cache,
                     use_cache=True).logits[0, -1]

    return _greedy(model, prompt, steps, step)


def _assert_same(model, lean, prompt, steps=20):
    ref_ids, ref_logits = _transformers_greedy(model, prompt, steps)
    ids, logits = _greedy(model, prompt, steps, lean)
    assert ids == ref_ids
    for a, b in zip(logits, ref_logits):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4), (a - b).abs().max()


@pytest.mark.parametrize("overrides", [
    {},                                                      # GQA: 4 query heads share 2 key/value heads
    {"num_key_value_heads": 4},                              # plain multi-head attention
    {"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 32}},  # Llama 3.x rope scaling
    {"tie_word_embeddings": True, "head_dim": 32},           # explicit head_dim ≠ hidden/heads, tied head
])
def test_lean_step_matches_transformers_on_tiny_llamas(overrides):
    from llmcli.backends.torch_lean import LeanLlamaStep, lean_step_supported

    model = _tiny_llama(**overrides)
    if "rope_scaling" in overrides:  # the config key took effect
        assert model.model.rotary_emb.rope_type == overrides["rope_scaling"]["rope_type"]
    assert lean_step_supported(model)
    lean = LeanLlamaStep(model, model.config.max_position_embeddings)
    _assert_same(model, lean, [1, 17, 42, 99, 5, 250, 3])


def test_long_windows_compute_cos_sin_per_token(monkeypatch):
    from llmcli.backends import torch_lean

    monkeypatch.setattr(torch_lean, "TABLE_MAX_POSITIONS", 8)
    model = _tiny_llama()
    lean = torch_lean.LeanLlamaStep(model, 128)
    assert lean._table is None
    _assert_same(model, lean, [1, 17, 42, 99, 5])


def test_fused_weights_are_shared_not_copied():
    from llmcli.backends.torch_lean import LeanLlamaStep

    model = _tiny_llama()
    before = sum(p.numel() for p in model.parameters())
    lean = LeanLlamaStep(model, 128)
    attn, mlp = model.model.layers[0].self_attn, model.model.layers[0].mlp
    fused_qkv, fused_gate_up = lean.layers[0][2], lean.layers[0][6]
    assert attn.q_proj.weight.data_ptr() == fused_qkv.data_ptr()
    assert attn.v_proj.weight.untyped_storage().data_ptr() == fused_qkv.untyped_storage().data_ptr()
    assert mlp.up_proj.weight.untyped_storage().data_ptr() == fused_gate_up.untyped_storage().data_ptr()
    assert sum(p.numel() for p in model.parameters()) == before


@pytest.mark.parametrize("overrides", [
    {"attention_bias": True},
    {"mlp_bias": True},
    {"hidden_act": "gelu"},
    {"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}},
])
def test_models_the_step_cannot_run_exactly_are_left_to_transformers(overrides):
    from llmcli.backends.torch_lean import lean_step_supported

    assert not lean_step_supported(_tiny_llama(**overrides))


def test_gpt2_is_left_to_transformers():
    from transformers import GPT2Config, GPT2LMHeadModel

    from llmcli.backends.torch_lean import lean_step_supported

    assert not lean_step_supported(GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=100)))


def test_smollm2_generation_uses_the_lean_step_and_matches_transformers(torch_backend):
    """The real model through the backend's loop (prompt via transformers, tokens via the lean step)
    gives transformers' own greedy ids, token for token."""
    assert torch_backend._lean is not None and "lean Llama step" in torch_backend.info.reason
    ids = torch_backend.chat_ids([Message("user", "Tell me about the moon.")])
    torch_backend.reset()
    finish = None
    for ev in torch_backend.stream(ids, SamplingParams(temperature=0, max_tokens=24, repeat_penalty=1.0)):
        if isinstance(ev, Finish):
            finish = ev
    assert torch_backend._lean_cache  # the cache was one the lean step fills
    ref_ids, _ = _transformers_greedy(torch_backend.model, ids, len(finish.token_ids))
    assert finish.token_ids == ref_ids
