"""The torch backend: generation semantics (greedy, seeds, stops, max tokens, --n, n-gram bans,
prefix reuse), other model families (GPT-2), and refusals with one-line errors."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import run_cli
from llmcli.backends.base import Finish, Message, SamplingParams
from llmcli.errors import BackendError, ModelError

STORY = "Write a long story about a dragon who learns to paint."


def run(backend, ids, params) -> Finish:
    for ev in backend.stream(ids, params):
        if isinstance(ev, Finish):
            return ev
    raise AssertionError("no Finish")


@pytest.fixture(scope="module")
def story_ids(torch_backend):
    return torch_backend.chat_ids([Message("user", STORY)])


def test_greedy_is_deterministic_with_and_without_prefix_reuse(torch_backend, story_ids):
    torch_backend.reset()
    a = run(torch_backend, story_ids, SamplingParams(temperature=0, max_tokens=12))
    assert a.stats.prompt_tokens_processed == len(story_ids)
    b = run(torch_backend, story_ids, SamplingParams(temperature=0, max_tokens=12))
    assert b.stats.prompt_tokens_processed == 1  # everything but the last token came from the cache
    torch_backend.reset()
    c = run(torch_backend, story_ids, SamplingParams(temperature=0, max_tokens=12))
    assert c.stats.prompt_tokens_processed == len(story_ids)
    assert a.token_ids == b.token_ids == c.token_ids and a.text.strip()


def test_chat_turn_processes_only_the_new_suffix(torch_backend):
    torch_backend.reset()
    first = [Message("user", "Name a colour.")]
    ids1 = torch_backend.chat_ids(first)
    r1 = run(torch_backend, ids1, SamplingParams(temperature=0, max_tokens=8))
    ids2 = torch_backend.chat_ids(first + [Message("assistant", r1.text), Message("user", "Another one?")])
    assert ids2[:len(ids1)] == ids1
    r2 = run(torch_backend, ids2, SamplingParams(temperature=0, max_tokens=8))
    cached = len(ids1) + len(r1.token_ids)  # prompt + generated ids (the last one fed back, but one may differ)
    assert r2.stats.prompt_tokens_processed <= len(ids2) - len(ids1)
    assert r2.stats.prompt_tokens_processed >= len(ids2) - cached
    torch_backend.reset()
    fresh = run(torch_backend, ids2, SamplingParams(temperature=0, max_tokens=8))
    assert fresh.token_ids == r2.token_ids


def test_seed_reproduces_and_different_seeds_differ(torch_backend, story_ids):
    p = SamplingParams(temperature=1.0, max_tokens=12, seed=7)
    a, b = run(torch_backend, story_ids, p), run(torch_backend, story_ids, p)
    c = run(torch_backend, story_ids, p.replace(seed=8))
    assert a.token_ids == b.token_ids and a.stats.seed == 7
    assert a.token_ids != c.token_ids


def test_max_tokens_exact(torch_backend, story_ids):
    r = run(torch_backend, story_ids, SamplingParams(temperature=0, max_tokens=7))
    assert len(r.token_ids) == r.stats.generated_tokens == 7 and r.stats.finish_reason == "length"


def test_stop_string_cuts_and_is_not_included(torch_backend, story_ids):
    full = run(torch_backend, story_ids, SamplingParams(temperature=0, max_tokens=20)).text
    words = full.split()
    assert len(words) > 4
    stop = words[3]
    cut = run(torch_backend, story_ids, SamplingParams(temperature=0, max_tokens=20, stop=(stop,)))
    assert cut.stats.finish_reason == "stop" and stop not in cut.text
    assert cut.text == full[: full.index(stop)]


def test_no_repeat_ngram_size_prevents_repeats(torch_backend):
    ids = torch_backend.tokenize("one two three, one two three, one two three, one two three,", add_special=False)
    plain = run(torch_backend, ids, SamplingParams(temperature=0, max_tokens=16))
    seq = ids + plain.token_ids
    assert _repeated_ngrams(seq, 3, start=len(ids)), "the test prompt should make the model repeat itself"
    r = run(torch_backend, ids, SamplingParams(temperature=0, max_tokens=16, no_repeat_ngram_size=3))
    assert len(r.token_ids) > 5
    assert not _repeated_ngrams(ids + r.token_ids, 3, start=len(ids))


def _repeated_ngrams(seq, n, *, start):
    """n-grams ending in the generated part that already occurred earlier in the sequence."""
    seen = {tuple(seq[i:i + n]) for i in range(0, start - n + 1)}
    bad = []
    for end in range(start, len(seq)):
        if end - n + 1 < 0:
            continue
        gram = tuple(seq[end - n + 1:end + 1])
        if gram in seen:
            bad.append(gram)
        seen.add(gram)
    return bad


def test_repeat_penalty_changes_greedy_output(torch_backend):
    ids = torch_backend.tokenize("one two three, one two three, one two three,", add_special=False)
    a = run(torch_backend, ids, SamplingParams(temperature=0, max_tokens=8))
    b = run(torch_backend, ids, SamplingParams(temperature=0, max_tokens=8, repeat_penalty=1.8))
    assert a.token_ids != b.token_ids


def test_logprobs_match_a_plain_forward(torch_backend):
    import torch

    ids = torch_backend.tokenize("The quick brown fox jumps over the lazy dog.")
    lps = torch_backend.logprobs(ids)
    with torch.inference_mode():
        ref = torch_backend.model(torch.tensor([ids])).logits[0].float().log_softmax(-1)
    assert len(lps) == len(ids) - 1
    assert max(abs(lps[i] - float(ref[i, ids[i + 1]])) for i in range(len(lps))) < 1e-4


def test_prompt_longer_than_window_is_refused(torch_backend):
    with pytest.raises(ModelError, match="context window"):
        list(torch_backend.stream(list(range(5, 5 + torch_backend.n_ctx)), SamplingParams(max_tokens=1)))


def test_cli_n_samples_torch_verbose(hf_model_dir, torch_backend):
    r = run_cli("generate", "-m", str(hf_model_dir), "-v", "--n", "3", "--seed", "11", "--temperature", "1.0",
                "--max-tokens", "8", "--jsonl", "Name a colour", check=True)
    records = [json.loads(line) for line in r.stdout.splitlines()]
    assert [x["seed"] for x in records] == [11, 12, 13] and {x["backend"] for x in records} == {"torch"}
    assert len({x["text"] for x in records}) > 1
    assert "backend: torch | device: cpu | dtype: float32" in r.stderr
    assert "HF-format model with no GGUF file" in r.stderr and "faster on CPU" in r.stderr
    # sample i is exactly the run with seed+i
    ids = torch_backend.chat_ids([Message("user", "Name a colour")])
    again = run(torch_backend, ids, SamplingParams(temperature=1.0, max_tokens=8, seed=12))
    assert again.text == records[1]["text"]


def test_torch_run_prints_only_llmcli_lines_on_stderr(hf_model_dir):
    """No library warning (transformers' `past_key_values` deprecation on every forward, …) reaches
    stderr: without -v stderr is empty; with -v it holds only llmcli's own lines."""
    args = ("generate", "-m", str(hf_model_dir), "--temperature", "0", "--max-tokens", "4", "Hi")
    r = run_cli(*args, check=True)
    assert r.stdout.strip() and r.stderr == ""
    r = run_cli(*args[:1], "-v", *args[1:], check=True)
    lines = r.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith("model: ") and lines[1].startswith("prompt: "), r.stderr


def test_library_warnings_are_filtered_in_one_place():
    import subprocess
    import sys

    code = ("import sys, warnings, logging\n"
            "if sys.argv[1] == 'quiet':\n"
            "    from llmcli.cli.app import quiet_libraries; quiet_libraries()\n"
            "from transformers.utils import logging as tl\n"
            "warnings.warn('LIB-WARNING', FutureWarning)\n"
            "logging.getLogger('torch._dynamo').warning('LIB-LOG')\n"
            "tl.get_logger('transformers.models.x').warning('HF-LOG')\n")
    loud = subprocess.run([sys.executable, "-c", code, "loud"], capture_output=True, text=True, check=True)
    assert all(x in loud.stderr for x in ("LIB-WARNING", "LIB-LOG", "HF-LOG")), loud.stderr
    quiet = subprocess.run([sys.executable, "-c", code, "quiet"], capture_output=True, text=True, check=True)
    assert quiet.stderr == ""


# --- other model families ----------------------------------------------------------------------------

def _copy_tokenizer(src, dst):
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (src / name).exists():
            shutil.copy(src / name, dst / name)


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory, hf_model_dir):
    """A randomly initialised 2-layer GPT2LMHeadModel saved as an HF folder (safetensors), with SmolLM2's
    tokenizer (same vocabulary size)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=49152, n_positions=256, n_embd=64, n_layer=2, n_head=2, bos_token_id=1,
                     eos_token_id=2)
    model = GPT2LMHeadModel(cfg)
    d = tmp_path_factory.mktemp("tiny-gpt2")
    model.save_pretrained(str(d))
    _copy_tokenizer(hf_model_dir, d)
    pickled = tmp_path_factory.mktemp("tiny-gpt2-pickle")
    cfg.save_pretrained(str(pickled))
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    _copy_tokenizer(hf_model_dir, pickled)
    return d, pickled


def _load(path, **kw):
    from llmcli.backends.select import BackendOptions
    from llmcli.backends.torch import TorchBackend
    from llmcli.store.refs import ModelRef

    return TorchBackend(ModelRef(path, "hf"), BackendOptions(**kw))


def test_gpt2_family_loads_and_generates(tiny_gpt2):
    b = _load(tiny_gpt2[0])
    try:
        assert type(b.model).__name__ == "GPT2LMHeadModel" and b.n_ctx == 256
        ids = b.tokenize("Hello world, this is a test.")
        r = run(b, ids, SamplingParams(temperature=0, max_tokens=8))
        assert r.stats.finish_reason == "stop" or len(r.token_ids) == 8
        assert run(b, ids, SamplingParams(temperature=0, max_tokens=8)).token_ids == r.token_ids
        assert len(b.logprobs(ids)) == len(ids) - 1
    finally:
        b.close()


def test_pickle_weights_need_allow_pickle(tiny_gpt2):
    _, pickled = tiny_gpt2
    with pytest.raises(ModelError, match="pickle") as e:
        _load(pickled)
    assert "--allow-pickle" in e.value.hint
    b = _load(pickled, allow_pickle=True)
    try:
        assert type(b.model).__name__ == "GPT2LMHeadModel"
    finally:
        b.close()


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    from transformers import BertConfig, BertForMaskedLM

    cfg = BertConfig(vocab_size=200, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64)
    d = tmp_path_factory.mktemp("tiny-bert")
    BertForMaskedLM(cfg).save_pretrained(str(d))
    return d


def test_encoder_only_model_is_not_a_text_generation_model(tiny_bert):
    with pytest.raises(ModelError, match="not a text-generation model"):
        _load(tiny_bert)
    cfg = json.loads((tiny_bert / "config.json").read_text())
    cfg.pop("architectures")  # no architectures: judged by model type
    (tiny_bert / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="not a text-generation model"):
        _load(tiny_bert)


def test_check_architecture_rule():
    from llmcli.backends.torch import check_architecture

    tables = dict(known_types={"llama", "bert", "t5"}, causal_types={"llama", "bert"},
                  causal_names={"LlamaForCausalLM", "BertLMHeadModel"}, masked_lm_types={"bert"})
    check_architecture({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}, trust_remote_code=False,
                       **tables)
    check_architecture({"model_type": "llama"}, trust_remote_code=False, **tables)
    check_architecture({"model_type": "bert", "is_decoder": True}, trust_remote_code=False, **tables)
    for bad, needle in [({"model_type": "bert", "architectures": ["BertForMaskedLM"]}, "not a text-generation"),
                        ({"model_type": "t5", "is_encoder_decoder": True}, "encoder-decoder"),
                        ({"model_type": "frob"}, "does not know"),
                        ({"model_type": "frob", "auto_map": {}}, "own Python code"),
                        ({}, "no model_type")]:
        with pytest.raises(ModelError, match=needle):
            check_architecture(bad, trust_remote_code=False, **tables)
    check_architecture({"model_type": "frob", "auto_map": {}}, trust_remote_code=True, **tables)


def test_device_cuda_without_cuda_is_an_error(hf_model_dir):
    from llmcli.backends.torch_env import TorchFacts

    from llmcli.backends.select import BackendOptions
    from llmcli.backends.torch import TorchBackend
    from llmcli.store.refs import ModelRef

    with pytest.raises(BackendError, match="no CUDA GPU"):
        TorchBackend(ModelRef(hf_model_dir, "hf"), BackendOptions(device="cuda"), facts=TorchFacts())


def test_ctrl_c_stops_torch_generation_promptly(hf_model_dir):
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "llmcli", "generate", "-m", str(hf_model_dir), "--raw",
                             "--temperature", "0", "--max-tokens", "500", "1, 2, 3, 4, 5, 6, 7,"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            # a suite started in the background inherits an ignored SIGINT: restore it
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stdout.read(1), "no output streamed"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=30)
        assert rc == 130 and time.monotonic() - t0 < 10
        assert "Traceback" not in proc.stderr.read().decode()
    finally:
        proc.kill()
        proc.wait()
