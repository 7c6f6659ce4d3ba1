"""The torch backend's GPU path, on randomly initialised models built from configs (no model
files, no network): greedy determinism, the same ids as transformers' ``generate``, prefix
reuse equal to a fresh run, ``--compile`` equal to eager, batched decode (``--parallel``) equal to
single runs, ``--n`` and stop strings through the real CLI. Each test runs on CUDA (marked ``gpu``: ``llmcli bench --suite gpu`` runs them; they
skip without a CUDA GPU) and, where the logic is device-independent, on the CPU with a tiny
config, so CI checks the same code without a GPU. The benchmark half of the suite is tested
here on the CPU too (tiny config, no compile)."""

from __future__ import annotations

import json
import os

import pytest

from conftest import run_cli
from llmcli.backends.base import Finish, SamplingParams


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


CUDA = pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif("not _cuda()", reason="no CUDA GPU")],
                    id="cuda")
CPU = pytest.param("cpu", id="cpu")
CONFIG = {"cpu": "tiny", "cuda": "smollm2-135m"}
PROMPT = "The lighthouse keeper read the letters slowly, one each evening, so that they would last."


def backend(device: str, dtype: str, compile: bool = False):
    from llmcli.bench.gpu import _backend
    from llmcli.bench.gpu_models import VARIED

    return _backend(CONFIG[device], device, dtype, compile, ctx=512, **VARIED)


def run(b, ids, **kw) -> Finish:
    for ev in b.stream(ids, SamplingParams(**kw)):
        if isinstance(ev, Finish):
            return ev
    raise AssertionError("no Finish")


def prompt_ids(b) -> list[int]:
    return b.tokenize(PROMPT, add_special=False)


@pytest.mark.parametrize("device", [CPU, CUDA])
def test_greedy_deterministic_and_prefix_reuse_equals_fresh(device):
    """float32: a prompt evaluated in pieces (prefix reuse) and in one go differ only by rounding,
    which bf16 could turn into a different greedy token; fresh runs must match in any dtype."""
    if device == "cuda":
        b = backend(device, "bfloat16")
        try:
            ids = prompt_ids(b)
            first = run(b, ids, temperature=0, max_tokens=24).token_ids
            b.reset()
            assert run(b, ids, temperature=0, max_tokens=24).token_ids == first
        finally:
            b.close()
    b = backend(device, "float32")
    try:
        ids = prompt_ids(b)
        a = run(b, ids, temperature=0, max_tokens=24)
        again = run(b, ids, temperature=0, max_tokens=24)  # the prompt's prefix comes from the cache
        assert again.stats.prompt_tokens_processed == 1
        longer = ids + a.token_ids[:5]  # a prompt extending the cached one: only the suffix is evaluated
        reused = run(b, longer, temperature=0, max_tokens=12)
        assert reused.stats.prompt_tokens_processed < len(longer)
        b.reset()
        fresh = run(b, longer, temperature=0, max_tokens=12)
        b.reset()
        a2 = run(b, ids, temperature=0, max_tokens=24)
        assert len(a.token_ids) == 24 and a.token_ids == again.token_ids == a2.token_ids
        assert fresh.stats.prompt_tokens_processed == len(longer) and reused.token_ids == fresh.token_ids
    finally:
        b.close()


def _generate_ids(model, ids: list[int], n: int, is_end) -> list[int]:
    import torch

    inp = torch.tensor([ids], device=model.device)
    out = model.generate(inp, attention_mask=torch.ones_like(inp), max_new_tokens=n, do_sample=False,
                         pad_token_id=2)[0, len(ids):].tolist()
    end = next((i for i, t in enumerate(out) if is_end(t)), None)
    return out if end is None else out[:end]


@pytest.mark.parametrize("device", [CPU, CUDA])
def test_same_ids_as_transformers_generate(device):
    """float32 (no TF32): llmcli's loop (the lean Llama decode step, growing cache, sampling on
    the device) picks exactly the tokens transformers' own greedy ``generate`` picks."""
    b = backend(device, "float32")
    try:
        ids = prompt_ids(b)
        ours = run(b, ids, temperature=0, max_tokens=32).token_ids
        ours = [t for t in ours if not b.is_end(t)]
        assert b._lean is not None  # the lean step is what decodes here
        assert len(set(ours)) > 8  # varied ids: a comparison that can fail
        assert ours == _generate_ids(b.model, ids, 32, b.is_end)
    finally:
        b.close()



@pytest.mark.parametrize("device", [CPU, CUDA])
def test_parallel_decoder_sequences_equal_single_runs(device):
    """float32: 6 prompts of different lengths through a 4-slot decoder (``--each-line --parallel``),
    admitted as others finish: each greedy sequence is its single run's ids (the multi-row matmuls
    and the masked attention over the padded cache flip no token here)."""
    b = backend(device, "float32")
    try:
        base = prompt_ids(b)
        prompts = [base[:6 + 3 * i] for i in range(6)]
        alone = [run(b, p, temperature=0, max_tokens=16).token_ids for p in prompts]
        decoder, queue, seqs = b.decoder(4), list(prompts), []

        def admit():
            while decoder.free() and queue:
                seqs.append(decoder.submit(queue.pop(0), SamplingParams(temperature=0, max_tokens=16)))

        decoder.admit = admit
        admit()
        got = []
        for k in range(len(prompts)):
            while k >= len(seqs):
                decoder.step()
            got.append(list(seqs[k].events())[-1].token_ids)
        decoder.close()
        assert got == alone and len({tuple(g) for g in got}) > 1
    finally:
        b.close()

@pytest.mark.parametrize("device", [CUDA])
def test_compile_equals_eager_with_prefix_reuse(device):
    eager = backend(device, "float32")
    ids = prompt_ids(eager)
    want = run(eager, ids, temperature=0, max_tokens=24).token_ids
    longer = ids + want[:4]
    want_longer = run(eager, longer, temperature=0, max_tokens=12).token_ids
    eager.close()
    compiled = backend(device, "float32", compile=True)
    try:
        assert compiled._compiled_step is not None and "torch.compile" in compiled.info.reason
        assert run(compiled, ids, temperature=0, max_tokens=24).token_ids == want
        r = run(compiled, longer, temperature=0, max_tokens=12)
        assert r.stats.prompt_tokens_processed < len(longer) and r.token_ids == want_longer
    finally:
        compiled.close()


@pytest.fixture(scope="module")
def random_folder(tmp_path_factory):
    """Saved HF folders of the random models, for the real CLI."""
    from llmcli.bench.gpu_models import VARIED, save

    root = tmp_path_factory.mktemp("random-models")
    return {d: save(CONFIG[d], root / CONFIG[d], **VARIED) for d in (["cpu", "cuda"] if _cuda() else ["cpu"])}


@pytest.mark.parametrize("device", [CPU, CUDA])
def test_cli_n_samples_and_stop_strings(device, random_folder):
    m = ["generate", "-m", str(random_folder[device]), "--device", device, "--dtype", "float32", "--max-tokens", "12"]
    r = run_cli(*m, "--n", "3", "--seed", "5", "--temperature", "1.0", "--jsonl", PROMPT, check=True)
    records = [json.loads(line) for line in r.stdout.splitlines()]
    assert [x["seed"] for x in records] == [5, 6, 7] and {x["backend"] for x in records} == {"torch"}
    assert len({x["text"] for x in records}) > 1
    one = run_cli(*m, "--seed", "6", "--temperature", "1.0", "--jsonl", PROMPT, check=True)
    assert json.loads(one.stdout)["text"] == records[1]["text"]  # sample i is the run with seed + i
    full = json.loads(run_cli(*m, "--temperature", "0", "--jsonl", PROMPT, check=True).stdout)["text"]
    cut_at = next(i for i in range(1, len(full) - 2) if full[i:i + 3].strip() and full.find(full[i:i + 3]) == i)
    stop = full[cut_at:cut_at + 3]
    r = run_cli(*m, "--temperature", "0", "--stop", stop, "--jsonl", PROMPT, check=True)
    rec = json.loads(r.stdout)
    assert rec["text"] == full[:cut_at] and rec["finish_reason"] == "stop", (full, stop, rec)


def test_benchmark_row_on_cpu():
    """The benchmark half of the suite, on the CPU with the tiny config (compile is CUDA's), in a
    process where llama-cpp-python, accelerate and the test extras cannot be imported: the GPU
    machine has only torch, transformers and the wheel folder's packages."""
    import subprocess
    import sys

    from llmcli.bench.gpu import HEADER, GpuResult, render
    from llmcli.bench.gpu_models import parameter_count

    code = ("import sys, json, dataclasses\n"
            "for m in ('llama_cpp', 'accelerate', 'openai', 'pexpect', 'hypothesis'): sys.modules[m] = None\n"
            "from llmcli.bench.gpu import measure\n"
            "r = measure('tiny', 'cpu', 'float32', compiled=False, gen_tokens=8, repeats=1, bandwidth=10e9)\n"
            "print(json.dumps(dataclasses.asdict(r)))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    r = GpuResult(**json.loads(out.stdout))
    assert r.params == parameter_count("tiny") == 3219776
    assert r.eager > 0 and r.plain > 0 and r.ttft_ms > 0 and r.prompt_tps > 0 and r.compiled is None
    assert r.bound == pytest.approx(10e9 / (3219776 * 4), rel=0.01)  # fp32 weights, embedding tied
    table = render([r], "t")
    row = table.splitlines()[-1].split(" | ")
    assert len(row) == len(HEADER) and row[0] == "| tiny" and row[4] == "–"


def test_gpu_suite_arguments(bad):
    bad.run("bench", "--quick", expect=2, message="--quick applies to --suite gpu")
    bad.run("bench", "--suite", "gpu", "-m", "x", expect=2, message="needs no model")
    bad.run("bench", "--suite", "gpu", "--repeats", "0", expect=2, message="--repeats")
    if not _cuda():
        bad.run("bench", "--suite", "gpu", "--quick", expect=1, message="needs a CUDA GPU")


def test_tokenizer_is_small_and_configs_match_their_models():
    from llmcli.bench.gpu_models import TOKENIZER_DIR, build, parameter_count, tokenizer

    size = sum(f.stat().st_size for f in TOKENIZER_DIR.iterdir())
    assert size < 3 * 2**20
    tok = tokenizer()
    assert len(tok) == 49152 and tok.eos_token == "<|im_end|>" and tok.chat_template
    model, _ = build("tiny", "cpu", "float32")
    assert sum(p.numel() for p in model.parameters()) == parameter_count("tiny")
    assert parameter_count("smollm2-135m") == 134515008  # the SmolLM2-135M GGUF's parameter count
    assert 7.3e9 < parameter_count("llama-8b") < 7.5e9 and 1.0e9 < parameter_count("llama-1b") < 1.1e9
    assert os.path.isfile(TOKENIZER_DIR / "chat_template.jinja")


def test_wheel_folder_recipe_covers_the_runtime_dependencies():
    """docs/performance.md's `pip download` line names every runtime dependency the GPU machine
    does not already have (torch, transformers and transformers' own dependencies are there;
    llama-cpp-python, accelerate, openai — the remote backend's client —, peft — finetune's — and
    llguidance — --json-schema on torch — are imported only by paths the GPU check never takes)."""
    import re
    tomllib = pytest.importorskip("tomllib")
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    deps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[<>=;\[ ]", d, maxsplit=1)[0].lower().replace("_", "-") for d in deps}
    present = {"torch", "transformers", "huggingface-hub", "safetensors", "tokenizers", "tomli"}
    unneeded = {"llama-cpp-python", "accelerate", "openai", "peft", "llguidance"}
    doc = (root / "docs" / "performance.md").read_text()
    recipe = doc[doc.index("python -m pip download --dest .wheels"):]
    recipe = recipe[: recipe.index("```")].lower().replace("_", "-")
    missing = sorted(n for n in names - present - unneeded if f'"{n}' not in recipe)
    assert not missing and '"pytest' in recipe, missing
