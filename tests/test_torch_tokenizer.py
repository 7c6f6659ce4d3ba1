"""The torch backend sees exactly the ids llama.cpp sees: same tokenizer output over the corpus,
same chat-template prompts, and a pre-tokenizer table checked against llama.cpp itself."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from llmcli.backends.base import Message
from llmcli.backends.gguf_convert import PRE_TOKENIZERS, fix_pre_tokenizer

CORPUS = json.loads((Path(__file__).parent / "data" / "tokenize_corpus.json").read_text(encoding="utf-8"))
# More cases where pre-tokenizers disagree: digits, contractions, runs of spaces and newlines, punctuation.
EXTRA = ["I'll say it's 12345 and 1,234.5678; don't WE'RE", "  leading\n\n  spaces\r\n\twith tabs  ",
         "ÀÉÎ 1st 22nd 333rd 4444th ½ ² ٣", "a+b=c; x<=y >>= z ^~| $5 #tag @user", "...!!!???  \n\n\n  end"]


@pytest.mark.parametrize("line", CORPUS, ids=range(len(CORPUS)))
def test_same_ids_as_llama_cpp(torch_backend, llama_backend, line):
    assert torch_backend.tokenize(line) == llama_backend.tokenize(line)
    plain = dict(add_special=False, parse_special=False)
    assert torch_backend.tokenize(line, **plain) == llama_backend.tokenize(line, **plain)
    ids = torch_backend.tokenize(line)
    assert torch_backend.detokenize(ids) == line
    assert torch_backend.token_pieces(ids) == llama_backend.token_pieces(ids)


@pytest.mark.parametrize("messages", [
    [Message("user", "Hi")],
    [Message("system", "Be brief"), Message("user", "What is 2+2?")],
    [Message("user", "Hi"), Message("assistant", "Hello! How can I help?"), Message("user", "Tell me a joke")],
], ids=["user", "system", "multi-turn"])
def test_same_chat_prompt_and_ids_as_llama_cpp(torch_backend, llama_backend, messages):
    assert torch_backend.has_chat_template and llama_backend.has_chat_template
    for gen in (True, False):
        assert torch_backend.chat_prompt(messages, add_generation_prompt=gen) == \
            llama_backend.chat_prompt(messages, add_generation_prompt=gen)
        assert torch_backend.chat_ids(messages, add_generation_prompt=gen) == \
            llama_backend.chat_ids(messages, add_generation_prompt=gen)


def test_end_of_generation_tokens_match(torch_backend, llama_backend):
    ends = {t for t in range(64) if llama_backend.is_end(t)}
    assert ends and ends == {t for t in range(64) if torch_backend.is_end(t)}


def test_conversion_restored_smollm_pre_tokenizer(converted_gguf):
    folder, _ = converted_gguf
    manifest = json.loads((folder / "llmcli-conversion.json").read_text())
    assert manifest["pre_tokenizer"] == "smollm" and manifest["pre_tokenizer_fix"] == "fixed:smollm"
    pre = json.loads((folder / "tokenizer.json").read_text())["pre_tokenizer"]
    assert pre["type"] == "Sequence" and pre["pretokenizers"][0] == {"type": "Digits", "individual_digits": True}


# --- the pre-tokenizer table, each name against llama.cpp's own tokenizer ----------------------------

@pytest.fixture(scope="session")
def gguf_fields(gguf_path):
    import gguf

    return gguf.GGUFReader(str(gguf_path)).fields


def _vocab_only_gguf(fields, pre: str, out: Path) -> Path:
    """The SmolLM2 GGUF's metadata (vocabulary, merges, …) with another tokenizer.ggml.pre and no tensors."""
    kvs = []
    for name, f in fields.items():
        if name.startswith("GGUF."):
            continue
        if name == "tokenizer.ggml.pre":
            k, v = name.encode(), pre.encode()
            kvs.append(struct.pack("<Q", len(k)) + k + struct.pack("<IQ", 8, len(v)) + v)  # 8 = string
        else:
            kvs.append(b"".join(p.tobytes() for p in f.parts))
    out.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs)) + b"".join(kvs))
    return out


def _llama_cpp_tokenizer(path: Path):
    import llama_cpp
    from llama_cpp import _logger

    _logger.set_verbose(False)
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    assert model, f"llama.cpp refused {path}"
    vocab = llama_cpp.llama_model_get_vocab(model)

    def tokenize(text: str) -> list[int]:
        data = text.encode()
        cap = len(data) + 8
        buf = (llama_cpp.llama_token * cap)()
        n = llama_cpp.llama_tokenize(vocab, data, len(data), buf, cap, False, False)
        return list(buf[:n])

    return tokenize, lambda: llama_cpp.llama_model_free(model)


def _hf_tokenizer(folder: Path, pre: str):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    warnings: list[str] = []
    status = fix_pre_tokenizer(tok, pre, "gpt2", warn=warnings.append)
    tok.encode_special_tokens = True  # special-token text is plain text, like llama.cpp's parse_special=False
    return tok, status, warnings


@pytest.mark.parametrize("pre", sorted(PRE_TOKENIZERS))
def test_pre_tokenizer_table_matches_llama_cpp(pre, gguf_fields, hf_model_dir, tmp_path):
    tokenize, free = _llama_cpp_tokenizer(_vocab_only_gguf(gguf_fields, pre, tmp_path / f"{pre}.gguf"))
    try:
        tok, status, warnings = _hf_tokenizer(hf_model_dir, pre)
        assert status == f"fixed:{PRE_TOKENIZERS[pre].family}" and not warnings
        for line in CORPUS + EXTRA:
            assert tok.encode(line, add_special_tokens=False).ids == tokenize(line), (pre, line)
    finally:
        free()


def test_the_trap_transformers_conversion_differs_from_llama_cpp(gguf_fields, hf_model_dir, tmp_path):
    """transformers' GGUF conversion gives SmolLM2 a plain GPT-2 byte-level pre-tokenizer; llama.cpp
    splits digits one by one for `smollm`: without the table the ids differ."""
    tokenize, free = _llama_cpp_tokenizer(_vocab_only_gguf(gguf_fields, "smollm", tmp_path / "s.gguf"))
    try:
        unfixed, _, _ = _hf_tokenizer(hf_model_dir, "gpt-2")
        differing = [line for line in CORPUS + EXTRA if unfixed.encode(line, add_special_tokens=False).ids
                     != tokenize(line)]
        assert "    4 spaces" in differing
    finally:
        free()


def test_unknown_pre_tokenizer_warns_and_keeps_conversion(hf_model_dir):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(hf_model_dir / "tokenizer.json"))
    before = tok.pre_tokenizer.__getstate__()
    warnings: list[str] = []
    assert fix_pre_tokenizer(tok, "brand-new-pre", "gpt2", warn=warnings.append) == "unknown"
    assert len(warnings) == 1 and "brand-new-pre" in warnings[0] and "may differ" in warnings[0]
    assert tok.pre_tokenizer.__getstate__() == before
    # sentencepiece vocabularies have no BPE pre-tokenizer to fix
    assert fix_pre_tokenizer(tok, "default", "llama", warn=warnings.append) == "not-bpe" and len(warnings) == 1


def test_piece_bytes_reassemble_multibyte_text(torch_backend):
    text = "Emoji 👨‍👩‍👧 and 中文"
    ids = torch_backend.tokenize(text, add_special=False)
    assert b"".join(torch_backend._piece(t, False) for t in ids).decode("utf-8") == text
    assert torch_backend._piece(2, False) == b"" and torch_backend._piece(2, True) == b"<|im_end|>"
