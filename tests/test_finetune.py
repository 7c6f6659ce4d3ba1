"""llmcli finetune (issue 14): real LoRA training with peft on the real SmolLM2 and a tiny random GPT-2,
the adapter used by both backends, Ctrl-C + --resume, --seed, --merge. Kept small: CI has 2 cores."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_cli

WORDS = ("zorblat", "quenvix", "mirthal", "dravon")
FORMAT = re.compile(r"^ (%s)\." % "|".join(WORDS))
HELD_OUT = 77  # no line of the training data names this project


def _line(n: int) -> str:
    return f"The code name of project {n} is {WORDS[n % 4]}."


@pytest.fixture(scope="module")
def facts(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("facts")
    (d / "facts.txt").write_text("".join(_line(n) + "\n" for n in range(1, 61)))
    (d / "val.txt").write_text("".join(_line(n) + "\n" for n in range(61, 71)))
    return d


def _env(torch_cache_dir) -> dict:
    return {"LLMCLI_CACHE_DIR": str(torch_cache_dir)}


def _greedy(name_or_path: str, env: dict, backend: str = "torch") -> str:
    r = run_cli("generate", "-m", name_or_path, "--backend", backend, "--raw", "-t", "0", "--max-tokens", "6",
                f"The code name of project {HELD_OUT} is", env=env, check=True)
    return r.stdout


def _ppl(name: str, text: Path, backend: str, env: dict) -> float:
    r = run_cli("perplexity", "-m", name, "--backend", backend, "--json", str(text), env=env, check=True)
    return json.loads(r.stdout)["perplexity"]


def test_smollm2_learns_the_format_and_both_backends_use_the_adapter(gguf_path, converted_gguf, torch_cache_dir,
                                                                    facts):
    env = _env(torch_cache_dir)
    before = _greedy(str(gguf_path), env, backend="llama.cpp")
    assert not FORMAT.match(before), before  # the base model does not know the invented format
    r = run_cli("finetune", "-m", str(gguf_path), str(facts / "facts.txt"), "--as", "codes", "--val-split", "0.2",
                "--seq-len", "64", "--epochs", "1", "--lr", "4e-3", "--json", env=env, check=True)
    s = json.loads(r.stdout)
    assert s["name"] == "codes" and s["gguf"] and s["steps"] >= 8 and s["val_examples"] >= 1
    # Stated margin: the held-out loss at least halves (measured: 2.65 → 0.25 in 10 steps).
    assert s["val_loss_after"] < 0.5 * s["val_loss_before"], s
    after = _greedy("codes", env)
    assert FORMAT.match(after), after
    assert FORMAT.match(_greedy("codes", env, backend="llama.cpp"))
    # llama.cpp: the GGUF LoRA on the Q4_1 base; torch: peft on the dequantized base.
    val = facts / "val.txt"
    p_torch, p_llama = _ppl("codes", val, "torch", env), _ppl("codes", val, "llama.cpp", env)
    assert abs(p_torch - p_llama) / p_torch < 0.03, (p_torch, p_llama)
    assert p_torch < 0.5 * _ppl(str(gguf_path), val, "llama.cpp", env)
    tok = run_cli("tokenize", "-m", "codes", "hello", env=env, check=True)
    assert tok.stdout.strip()
    show = run_cli("models", "show", "codes", env=env, check=True).stdout
    assert str(gguf_path) in show and "rank 8" in show and "q_proj" in show
    assert s["val_loss_after"] is not None and f"{s['val_loss_after']:.4f}" in show
    import hashlib
    assert hashlib.sha256((facts / "facts.txt").read_bytes()).hexdigest() in show


def test_chat_records_train_on_assistant_turns_only(torch_backend):
    from llmcli.finetune.data import IGNORE, chat_example

    turns = (("system", "Be brief."), ("user", "Name a colour."), ("assistant", "Blue."), ("user", "Another one?"),
             ("assistant", "Green."))
    ex, cut = chat_example(torch_backend, turns, 512)
    assert not cut and len(ex.ids) == len(ex.labels)
    from llmcli.backends.base import Message

    assert ex.ids == tuple(torch_backend.chat_ids([Message(r, c) for r, c in turns], add_generation_prompt=False))
    spans, cur = [], []
    for i, label in zip(ex.ids, ex.labels):
        if label != IGNORE:
            cur.append(i)
        elif cur:
            spans.append(torch_backend.detokenize(cur))
            cur = []
    if cur:
        spans.append(torch_backend.detokenize(cur))
    # each reply and its end-of-turn token (so the model learns to stop), nothing of the other turns
    assert [s.strip() for s in spans] == ["Blue.<|im_end|>", "Green.<|im_end|>"], spans
    short, cut = chat_example(torch_backend, turns, 10)
    assert cut and len(short.ids) == 10


# --- the tiny random GPT-2: resume, seed, merge, bad inputs ---------------------------------------------

@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory, hf_model_dir) -> Path:
    """A random 2-layer GPT-2 (the walkthrough's family) built from a config, with SmolLM2's tokenizer."""
    import shutil

    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=49152, n_positions=128, n_embd=32, n_layer=2, n_head=2, bos_token_id=1,
                     eos_token_id=2)
    d = tmp_path_factory.mktemp("ft-gpt2")
    GPT2LMHeadModel(cfg).save_pretrained(str(d))
    for f in hf_model_dir.iterdir():
        if f.name.startswith(("tokenizer", "chat_template", "special_tokens")):
            shutil.copy(f, d / f.name)
    return d


def _adapter_bytes(name: str) -> bytes:
    r = run_cli("models", "show", name, "--json", check=True)
    return (Path(json.loads(r.stdout)["adapter"]["path"]) / "adapter_model.safetensors").read_bytes()


def _train_args(model: Path, data: Path, name: str, *extra: str) -> list[str]:
    # One thread: the model is tiny, and on a busy machine more threads spin-wait (measured 15× slower).
    return ["finetune", "-m", str(model), str(data), "--as", name, "--seq-len", "16", "--epochs", "3",
            "--lr", "1e-2", "--seed", "7", "--threads", "1", *extra]


def test_gpt2_trains_seed_reproduces_and_resume_equals_an_uninterrupted_run(tiny_gpt2, tmp_path):
    data = tmp_path / "story.txt"
    data.write_text("Once upon a time a small model learned a few words of text. " * 12)
    r = run_cli(*_train_args(tiny_gpt2, data, "a", "--json"), check=True)
    s = json.loads(r.stdout)
    assert s["steps"] > 0 and s["train_loss"] < 11  # random init starts near ln(49152) ≈ 10.8
    assert not s["gguf"]  # llama.cpp takes GGUF LoRA for Llama-family bases only
    run_cli(*_train_args(tiny_gpt2, data, "b"), check=True)
    assert _adapter_bytes("a") == _adapter_bytes("b")  # same data + seed → same bytes

    proc = subprocess.Popen([sys.executable, "-m", "llmcli", *_train_args(tiny_gpt2, data, "c")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ))
    err = b""
    while b"training:" not in err:
        line = proc.stderr.readline()
        assert line, err
        err += line
    proc.send_signal(signal.SIGINT)
    out, rest = proc.communicate(timeout=300)
    err += rest
    assert proc.returncode == 130, err
    assert b"error: training stopped after step" in err and b"--resume" in err
    assert run_cli("models", "show", "c").returncode == 1  # nothing registered yet
    run_cli(*_train_args(tiny_gpt2, data, "c", "--resume"), check=True)
    assert _adapter_bytes("c") == _adapter_bytes("a")


def test_chat_jsonl_trains_on_gpt2(tiny_gpt2, tmp_path):
    data = tmp_path / "chats.jsonl"
    rec = {"messages": [{"role": "user", "content": "What is the code name?"},
                        {"role": "assistant", "content": "It is zorblat."}]}
    data.write_text("\n".join(json.dumps(rec) for _ in range(4)) + "\n")
    r = run_cli(*_train_args(tiny_gpt2, data, "chatty", "--seq-len", "64", "--val", str(data), "--json"), check=True)
    s = json.loads(r.stdout)
    assert s["kind"] == "chat" and s["train_examples"] == 4 and s["val_examples"] == 4 and s["steps"] == 12
    assert s["val_loss_after"] < s["val_loss_before"]


def test_merge_gives_the_same_greedy_output_as_base_plus_adapter(tiny_gpt2, tmp_path):
    data = tmp_path / "t.txt"
    data.write_text("Merged weights must equal base plus adapter. " * 10)
    run_cli(*_train_args(tiny_gpt2, data, "m", "--merge"), check=True)
    show = json.loads(run_cli("models", "show", "m", "--json", check=True).stdout)
    assert show["kind"] == "imported" and (Path(show["path"]) / "config.json").is_file()

    def greedy(name):  # 16 tokens of a random model: equal text means equal ids
        r = run_cli("generate", "-m", name, "--raw", "-t", "0", "--max-tokens", "16", "--json", "Merged", check=True)
        rec = json.loads(r.stdout.splitlines()[0])
        assert rec["usage"]["completion_tokens"] == 16
        return rec["text"]

    assert greedy("m") == greedy("m-lora")


def test_changed_base_is_refused(tiny_gpt2, tmp_path, bad):
    import shutil

    base = tmp_path / "base"
    shutil.copytree(tiny_gpt2, base)
    data = tmp_path / "t.txt"
    data.write_text("Some words to learn from. " * 10)
    run_cli(*_train_args(base, data, "x"), check=True)
    assert run_cli("generate", "-m", "x", "--max-tokens", "2", "hi").returncode == 0
    w = base / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-4] + b"\0\0\0\1")
    bad.run("generate", "-m", "x", "--max-tokens", "2", "hi", expect=1, message="changed since it was trained")
    shutil.rmtree(base)
    bad.run("generate", "-m", "x", "--max-tokens", "2", "hi", expect=1, message="is missing")


def test_bad_inputs(bad, tiny_gpt2, tmp_path_factory):
    from transformers import BertConfig, BertForMaskedLM

    w = bad.work
    (w / "empty.txt").write_text("")
    (w / "blank.txt").write_text("  \n\t\n")
    (w / "short.txt").write_text("Too short.")
    (w / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    (w / "notrec.jsonl").write_text('[1, 2]\n')
    (w / "role.jsonl").write_text('{"messages": [{"role": "wizard", "content": "hi"}]}\n')
    (w / "ok.txt").write_text("Enough words for a few training sequences here. " * 10)
    bert = tmp_path_factory.mktemp("ft-bert")
    BertForMaskedLM(BertConfig(vocab_size=200, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64)).save_pretrained(str(bert))
    m = ("-m", str(tiny_gpt2), "--threads", "1")
    bad.run("finetune", *m, "empty.txt", expect=2, message="empty")
    bad.run("finetune", *m, "blank.txt", expect=2, message="only whitespace")
    bad.run("finetune", *m, "short.txt", expect=2, message="shorter than one training sequence")
    bad.run("finetune", *m, "latin1.txt", expect=2, message="not UTF-8")
    bad.run("finetune", *m, "notrec.jsonl", expect=2, message="line 1")
    bad.run("finetune", *m, "role.jsonl", expect=2, message="unknown role 'wizard'")
    bad.run("finetune", "-m", str(bert), "ok.txt", expect=1, message="not a text-generation model")
    bad.run("finetune", *m, "ok.txt", "--lr", "0", expect=2, message="--lr")
    bad.run("finetune", *m, "ok.txt", "--lr", "-1", expect=2, message="--lr")
    bad.run("finetune", *m, "ok.txt", "--epochs", "0", expect=2, message="--epochs")
    bad.run("finetune", *m, "ok.txt", "--val", "ok.txt", "--val-split", "0.1", expect=2, message="--val")
    bad.run("finetune", *m, "missing.txt", expect=2, message="not found")
    bad.run("finetune", *m, "ok.txt", "--seq-len", "16", "--resume", expect=1, message="no checkpoint")
    bad.run("finetune", *m, "ok.txt", "--targets", "nope_proj", "--seq-len", "16", expect=1, message="nope_proj")


def test_disk_full_while_saving_registers_nothing(tiny_gpt2, tmp_path):
    """A data dir on a 200 KB tmpfs: the rank-256 adapter does not fit; one error line, nothing registered,
    no half-written adapter folder left."""
    mnt = tmp_path / "full"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root to mount a small tmpfs")
    try:
        data = tmp_path / "ok.txt"
        data.write_text("Enough words for a few training sequences here. " * 10)
        r = run_cli("finetune", "-m", str(tiny_gpt2), str(data), "--seq-len", "16", "--epochs", "1", "--rank", "256",
                    "--threads", "1", "--as", "full", env={"LLMCLI_DATA_DIR": str(mnt)})
        # the "training: …" progress line, then one error line (the failure comes after training)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 1 and r.stdout == "" and "Traceback" not in r.stderr, r.stderr
        assert lines[-1].startswith("error: cannot write the adapter") and "No space left on device" in lines[-1]
        assert not (mnt / "registry.json").exists() or "full" not in (mnt / "registry.json").read_text()
        assert list((mnt / "adapters").iterdir()) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
