"""--reasoning and --reasoning-budget (issue 15, item 3): copies of the SmolLM2 GGUF whose chat template
is replaced (gguf package) by a Qwen3-style one with enable_thinking, or by one whose generation prompt
opens a thinking block; real llama.cpp and torch in real subprocesses."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli
from ggufs import QWEN3_STYLE, THINK_OPEN, with_chat_template
from llmcli.chat_template import ChatTemplate


@pytest.fixture(scope="module")
def qwen3_gguf(gguf_path, tmp_path_factory):
    return with_chat_template(gguf_path, tmp_path_factory.mktemp("qwen3") / "qwen3.gguf", QWEN3_STYLE)


@pytest.fixture(scope="module")
def think_gguf(gguf_path, tmp_path_factory):
    return with_chat_template(gguf_path, tmp_path_factory.mktemp("think") / "think.gguf", THINK_OPEN)


def _pieces(stdout: str) -> str:
    return "".join(json.loads(line.split("\t", 1)[1]) for line in stdout.splitlines())


def test_template_variables_decide_the_switch():
    effort = ChatTemplate("{{ messages[0].content }}{% if reasoning_effort %}{{ reasoning_effort }}{% endif %}")
    assert effort.reasoning_vars("high") == {"reasoning_effort": "high"}
    assert ChatTemplate(QWEN3_STYLE).reasoning_vars("off") == {"enable_thinking": False}
    assert ChatTemplate(QWEN3_STYLE).reasoning_vars(None) == {}


def test_reasoning_off_renders_the_switch(qwen3_gguf):
    m = ["-m", str(qwen3_gguf)]
    off = _pieces(run_cli("tokenize", "--chat", *m, "--reasoning", "off", "--pieces", "hi", check=True).stdout)
    on = _pieces(run_cli("tokenize", "--chat", *m, "--reasoning", "on", "--pieces", "hi", check=True).stdout)
    default = _pieces(run_cli("tokenize", "--chat", *m, "--pieces", "hi", check=True).stdout)
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert on == default and on.endswith("<|im_start|>assistant\n")
    # generate renders the same prompt: its prompt token count is the tokenize count
    r = json.loads(run_cli("generate", *m, "--reasoning", "off", "--temperature", "0", "--max-tokens", "4",
                           "--json", "hi", check=True).stdout)
    count = run_cli("tokenize", "--chat", *m, "--reasoning", "off", "--count", "hi", check=True).stdout
    assert r["usage"]["prompt_tokens"] == int(count)


def test_reasoning_without_a_switch_is_a_clear_error(gguf_path, qwen3_gguf, bad):
    bad.run("generate", "-m", str(gguf_path), "--reasoning", "off", "hi", expect=2,
            message="chat template has no reasoning switch")
    bad.run("generate", "-m", str(qwen3_gguf), "--reasoning", "high", "hi", expect=2,
            message="has only enable_thinking (on/off)")
    bad.run("chat", "-m", str(gguf_path), "--reasoning", "off", input="hi\n", expect=2,
            message="no reasoning switch")
    bad.run("generate", "-m", str(qwen3_gguf), "--raw", "--reasoning", "off", "hi", expect=2,
            message="needs the model's chat template")
    bad.run("generate", "--reasoning", "maybe", "hi", expect=2, message="--reasoning")
    bad.run("generate", "--reasoning-budget", "-1", "hi", expect=2, message="--reasoning-budget")


def _budget_run(model, *extra, budget="8", max_tokens="16"):
    r = run_cli("generate", "-m", str(model), *extra, "--temperature", "0", "--reasoning-budget", budget,
                "--max-tokens", max_tokens, "--json", "Write a long story about a dragon who learns to paint.", check=True)
    return json.loads(r.stdout)


def _assert_budget(rec):
    assert rec["thinking_tokens"] == 8, rec  # the model would think on: the budget cut it
    assert rec["thinking"].strip() and rec["text"].strip(), rec
    assert rec["usage"]["completion_tokens"] == 16  # 8 thinking + closing tag tokens + the answer


def test_reasoning_budget_closes_thinking_llamacpp(think_gguf):
    _assert_budget(_budget_run(think_gguf))
    zero = _budget_run(think_gguf, budget="0", max_tokens="6")
    assert zero.get("thinking_tokens", 0) == 0 and zero["text"].strip() and not zero.get("thinking", "").strip()


def test_reasoning_budget_closes_thinking_torch(hf_model_dir, tmp_path):
    # The converted SmolLM2 folder with the thinking template: weights linked, template replaced.
    folder = tmp_path / "think-hf"
    folder.mkdir()
    for f in hf_model_dir.iterdir():
        if f.name not in ("tokenizer_config.json", "chat_template.jinja"):
            (folder / f.name).symlink_to(f)
    config = json.loads((hf_model_dir / "tokenizer_config.json").read_text())
    config["chat_template"] = THINK_OPEN
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    rec = _budget_run(folder, "--backend", "torch")
    assert rec["backend"] == "torch"
    _assert_budget(rec)


def test_set_reasoning_in_chat(qwen3_gguf, gguf_path):
    r = run_cli("chat", "-m", str(qwen3_gguf), "--no-save", "--temperature", "0", "--max-tokens", "4",
                input="/set reasoning off\n/set\nhi\n", check=True)
    assert "set reasoning = off" in r.stderr and "reasoning_budget = none" in r.stderr
    plain = run_cli("chat", "-m", str(gguf_path), "--no-save", input="/set reasoning off\n/set\n")
    assert "no reasoning switch" in plain.stderr and "reasoning = none" in plain.stderr
