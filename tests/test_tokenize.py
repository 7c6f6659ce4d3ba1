"""Tokenization through llama.cpp checked against an independent tokenizer (transformers'
GGUF conversion of the same file, with SmolLM2's digit pre-tokenizer restored)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli

CORPUS = json.loads((Path(__file__).parent / "data" / "tokenize_corpus.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def reference_tokenizer(gguf_path):
    """transformers' tokenizer for the GGUF. Its converter ignores `tokenizer.ggml.pre`, which for SmolLM2
    drops the individual-digits split that llama.cpp and the original tokenizer apply: restore it."""
    from tokenizers import pre_tokenizers
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    return tok


@pytest.fixture(scope="session")
def llama(gguf_path):
    from llmcli.backends.llamacpp import LlamaCppBackend

    b = LlamaCppBackend(gguf_path, ctx_cap=512)
    yield b
    b.close()


@pytest.mark.parametrize("line", CORPUS, ids=range(len(CORPUS)))
def test_ids_match_independent_tokenizer(llama, reference_tokenizer, line):
    ours = llama.tokenize(line)
    ref = reference_tokenizer(line, add_special_tokens=True)["input_ids"]
    assert ours == ref
    plain = llama.tokenize(line, add_special=False, parse_special=False)
    ref_plain = reference_tokenizer(line, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    assert plain == ref_plain


@pytest.mark.parametrize("line", CORPUS, ids=range(len(CORPUS)))
def test_roundtrip(llama, line):
    assert llama.detokenize(llama.tokenize(line)) == line
    assert llama.detokenize(llama.tokenize(line, add_special=False, parse_special=False)) == line


def test_special_policy_differs_only_for_special_text(llama):
    text = "<|im_start|>user"
    parsed = llama.tokenize(text)
    plain = llama.tokenize(text, add_special=False, parse_special=False)
    assert parsed[0] == 1 and len(plain) > len(parsed)  # 1 is <|im_start|> in SmolLM2
    assert llama.tokenize("Hello") == llama.tokenize("Hello", add_special=False, parse_special=False)


def test_chat_template_rendered_in_sandbox_matches_transformers(llama, reference_tokenizer):
    from llmcli.backends.base import Message

    msgs = [Message("system", "Be brief"), Message("user", "Hi")]
    ours = llama.chat_prompt(msgs)
    ref = reference_tokenizer.apply_chat_template([m.to_dict() for m in msgs], tokenize=False,
                                                  add_generation_prompt=True)
    assert ours == ref
    assert llama.chat_ids(msgs) == reference_tokenizer(ref, add_special_tokens=True)["input_ids"]


def test_sandbox_blocks_python_internals():
    from llmcli.chat_template import ChatTemplate
    from llmcli.errors import ModelError

    evil = ChatTemplate("{{ messages.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(ModelError, match="unsafe"):
        evil.render([])
    broken = ChatTemplate("{% bogus_tag %}")  # compiled lazily: construction alone is fine
    with pytest.raises(ModelError, match="does not compile"):
        broken.render([])


def test_cli_forms(gguf_path):
    m = ["-m", str(gguf_path)]
    ids = run_cli("tokenize", *m, "Hello world", check=True).stdout.split()
    assert ids == ["19556", "905"]
    pieces = run_cli("tokenize", *m, "--pieces", "Hello world", check=True).stdout.splitlines()
    assert pieces == ['19556\t"Hello"', '905\t" world"']
    assert run_cli("tokenize", *m, "--count", input="a b c d", check=True).stdout.strip() == "4"
    assert run_cli("detokenize", *m, "19556", "905", check=True).stdout == "Hello world\n"
    assert run_cli("detokenize", *m, input="19556 905", check=True).stdout == "Hello world\n"
    rec = json.loads(run_cli("tokenize", *m, "--json", "--pieces", "Hi", check=True).stdout)
    assert rec["count"] == len(rec["ids"]) == len(rec["pieces"])
    special = run_cli("tokenize", *m, "<|im_start|>", check=True).stdout.split()
    plain = run_cli("tokenize", *m, "--no-special", "<|im_start|>", check=True).stdout.split()
    assert special == ["1"] and len(plain) > 1


def test_chat_ids_are_what_generate_feeds(gguf_path):
    m = ["-m", str(gguf_path)]
    chat = run_cli("tokenize", *m, "--chat", "--system", "Be brief", "--json", "Hi", check=True)
    ids = json.loads(chat.stdout)["ids"]
    text = run_cli("detokenize", *m, "-n", *map(str, ids), check=True).stdout
    assert text.startswith("<|im_start|>system\nBe brief<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n")
    rec = json.loads(run_cli("generate", *m, "--system", "Be brief", "--max-tokens", "1", "--json", "Hi",
                             check=True).stdout)
    assert rec["usage"]["prompt_tokens"] == len(ids)


def test_detokenize_rejects_out_of_vocab_ids(gguf_path):
    r = run_cli("detokenize", "-m", str(gguf_path), "99999999")
    assert r.returncode == 1 and "outside the vocabulary" in r.stderr and "Traceback" not in r.stderr
