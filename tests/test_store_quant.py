"""Pure functions of the store: quant tags, split GGUF groups, HF file filter, pull specs."""

from __future__ import annotations

import pytest

from llmcli.store import quant as q


@pytest.mark.parametrize("name, expected", [
    ("SmolLM2-135M-Instruct-Q4_K_M.gguf", "Q4_K_M"),
    ("some-model.Q8_0.gguf", "Q8_0"),
    ("qwen2.5-0.5b-instruct-q4_k_m.gguf", "Q4_K_M"),
    ("Llama-3.2-1B-Instruct-IQ4_XS.gguf", "IQ4_XS"),
    ("Llama-3.2-1B-Instruct-Q4_0_4_4.gguf", "Q4_0_4_4"),
    ("model-f16.gguf", "F16"),
    ("model.BF16.gguf", "BF16"),
    ("DeepSeek-R1-UD-Q2_K_XL-00001-of-00005.gguf", "UD-Q2_K_XL"),
    ("Q4_K_M/Model-Q4_K_M-00002-of-00003.gguf", "Q4_K_M"),
    ("gpt-oss-20b-MXFP4.gguf", "MXFP4"),
    ("Qwen3-8B.gguf", None),  # "Qwen3" is not a quant
    ("tinyllama.gguf", None),
    ("model-Q4_K_M_imatrix.gguf", "Q4_K_M"),
])
def test_quant_of(name, expected):
    assert q.quant_of(name) == expected


def test_split_groups_and_completeness():
    names = ["m-Q8_0-00001-of-00002.gguf", "m-Q8_0-00002-of-00002.gguf", "m-Q4_K_M.gguf",
             "m-Q6_K-00001-of-00003.gguf", "m-Q6_K-00002-of-00003.gguf", "mmproj-m-f16.gguf", "README.md"]
    groups = {g.quant: g for g in q.gguf_groups(names)}
    assert set(groups) == {"Q8_0", "Q4_K_M", "Q6_K"}  # mmproj is not a model
    assert groups["Q8_0"].files == ["m-Q8_0-00001-of-00002.gguf", "m-Q8_0-00002-of-00002.gguf"]
    assert groups["Q8_0"].complete and groups["Q4_K_M"].complete
    assert not groups["Q6_K"].complete
    assert q.split_info("m-Q6_K-00002-of-00003.gguf") == (2, 3)


def test_pick_by_tag_is_case_insensitive_and_lists_choices():
    groups = q.gguf_groups(["a-Q4_K_M.gguf", "a-Q8_0.gguf", "a-UD-Q4_K_XL.gguf"])
    assert q.pick_by_tag(groups, "q4_k_m").files == ["a-Q4_K_M.gguf"]
    assert q.pick_by_tag(groups, "Q4_K_XL").files == ["a-UD-Q4_K_XL.gguf"]
    with pytest.raises(q.QuantChoiceError) as e:
        q.pick_by_tag(groups, "Q3_K_S")
    assert e.value.choices == ["Q4_K_M", "Q8_0", "UD-Q4_K_XL"]


def test_pick_default_prefers_q4_k_m_then_nearest():
    g, why = q.pick_default(q.gguf_groups(["a-Q8_0.gguf", "a-Q4_K_M.gguf", "a-F16.gguf"]))
    assert g.quant == "Q4_K_M" and "default" in why
    g, why = q.pick_default(q.gguf_groups(["a-Q8_0.gguf", "a-Q4_K_S.gguf", "a-Q5_K_M.gguf"]))
    assert g.quant == "Q4_K_S" and "Q4_K_M is not in the repository" in why and "4-bit" in why
    g, why = q.pick_default(q.gguf_groups(["a-Q8_0.gguf", "a-Q5_K_M.gguf", "a-F16.gguf"]))
    assert g.quant == "Q5_K_M" and "larger" in why
    g, _ = q.pick_default(q.gguf_groups(["a-F16.gguf", "a-Q8_0.gguf"]))
    assert g.quant == "Q8_0"
    g, why = q.pick_default(q.gguf_groups(["only.gguf"]))
    assert g.files == ["only.gguf"] and "only" in why
    with pytest.raises(q.QuantChoiceError):
        q.pick_default(q.gguf_groups(["one.gguf", "two.gguf"]))
    with pytest.raises(q.QuantChoiceError):
        q.pick_default([])


def test_hf_files_never_pickle_or_subfolders():
    names = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
             "special_tokens_map.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
             "model.safetensors.index.json", "chat_template.jinja", "pytorch_model.bin", "model.pt",
             "training_args.bin", "onnx/model.onnx", "original/consolidated.pth", "README.md", ".gitattributes",
             "merges.txt", "vocab.json"]
    assert q.hf_files(names) == sorted([
        "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
        "special_tokens_map.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
        "model.safetensors.index.json", "chat_template.jinja", "merges.txt", "vocab.json"])


def test_hf_files_skip_duplicate_weight_sets():
    names = ["config.json", "consolidated.safetensors", "model-00001-of-00002.safetensors",
             "model-00002-of-00002.safetensors", "model.safetensors.index.json", "params.json"]
    assert q.hf_files(names) == ["config.json", "model-00001-of-00002.safetensors",
                                 "model-00002-of-00002.safetensors", "model.safetensors.index.json"]
    assert q.hf_files(["config.json", "weights.safetensors"]) == ["config.json", "weights.safetensors"]


@pytest.mark.parametrize("spec, expected", [
    ("bartowski/SmolLM2-135M-Instruct-GGUF:Q4_K_M", ("bartowski/SmolLM2-135M-Instruct-GGUF", "Q4_K_M", None)),
    ("TheOrg/Some-GGUF/some-model.Q8_0.gguf", ("TheOrg/Some-GGUF", None, "some-model.Q8_0.gguf")),
    ("TheOrg/Some-GGUF/Q4_K_M/part-00001-of-00002.gguf", ("TheOrg/Some-GGUF", None, "Q4_K_M/part-00001-of-00002.gguf")),
    ("HuggingFaceTB/SmolLM2-135M-Instruct", ("HuggingFaceTB/SmolLM2-135M-Instruct", None, None)),
    ("hf.co/a/b:q8_0", ("a/b", "q8_0", None)),
])
def test_parse_pull_spec(spec, expected):
    assert q.parse_pull_spec(spec) == expected


@pytest.mark.parametrize("spec", ["", "justaname", "a/b:", "../b", "a/..", "a/b/../../etc/passwd", "a/b\x00",
                                  "/abs/path", "a//b"])
def test_parse_pull_spec_rejects(spec):
    with pytest.raises(ValueError):
        q.parse_pull_spec(spec)
