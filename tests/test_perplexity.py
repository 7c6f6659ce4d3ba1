"""Perplexity: the sliding-window plan, scoring over a fake backend, the CLI, and the two backends
agreeing numerically on the same text (the correctness check of the torch backend)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from conftest import run_cli
from llmcli.errors import UsageError
from llmcli.perplexity import plan_windows, score

PROSE = Path(__file__).parent / "data" / "perplexity_prose.txt"


@pytest.mark.parametrize("n,ctx,stride", [(2, 2, 1), (10, 4, 2), (10, 4, 4), (10, 4, 1), (100, 16, 5),
                                          (7, 32, 16), (33, 8, 3)])
def test_every_token_but_the_first_is_scored_once_with_enough_context(n, ctx, stride):
    scored = []
    for w in plan_windows(n, ctx, stride):
        assert 0 <= w.begin < w.first_scored < w.end <= n and w.end - w.begin <= ctx
        for j in range(w.first_scored, w.end):
            scored.append(j)
            assert j - w.begin >= min(j, ctx - stride)  # context tokens before j in its window
    assert scored == list(range(1, n))


@pytest.mark.parametrize("n,ctx,stride", [(1, 4, 2), (10, 1, 1), (10, 4, 5), (10, 4, 0)])
def test_bad_plans_are_usage_errors(n, ctx, stride):
    with pytest.raises(UsageError):
        plan_windows(n, ctx, stride)


class FakeBackend:
    """log p(token) = -log(1 + context length): checks that windows give the right context."""

    def __init__(self):
        self.calls = []

    def logprobs(self, ids):
        self.calls.append(len(ids))
        return [-math.log(1 + k + 1) for k in range(len(ids) - 1)]


def test_score_sums_the_scored_positions():
    b = FakeBackend()
    r = score(b, list(range(10)), ctx=4, stride=2)
    # windows [0,4) [2,6) [4,8) [6,10): positions 1-3 have 1-3 tokens of context, then each window
    # scores its last two positions, with 2 and 3 tokens of context
    expected = [1, 2, 3, 2, 3, 2, 3, 2, 3]
    assert r.tokens == 9 and r.windows == 4 and b.calls == [4, 4, 4, 4] and r.evaluated_tokens == 16
    assert math.isclose(r.nll_sum, sum(math.log(1 + c) for c in expected))
    assert math.isclose(r.perplexity, math.exp(r.mean_nll))
    assert set(r.to_dict()) >= {"perplexity", "mean_nll", "tokens", "tokens_per_s", "ctx", "stride"}


class Recording:
    """Passes logprobs through and keeps them, so one scoring run serves several checks."""

    def __init__(self, backend):
        self.backend = backend
        self.lps: list[float] = []

    def logprobs(self, ids):
        out = self.backend.logprobs(ids)
        self.lps.extend(out)
        return out


@pytest.fixture(scope="module")
def prose_scores(torch_backend, llama_backend):
    text = PROSE.read_text(encoding="utf-8")
    ids = llama_backend.tokenize(text, add_special=True, parse_special=False)
    assert torch_backend.tokenize(text, add_special=True, parse_special=False) == ids
    t, ll = Recording(torch_backend), Recording(llama_backend)
    return ids, score(t, ids, ctx=512, stride=256), score(ll, ids, ctx=512, stride=256), t.lps, ll.lps


def test_backends_agree_within_one_percent(prose_scores):
    ids, t, ll, a, b = prose_scores
    assert 300 < len(ids) <= 512 and t.windows == ll.windows == 1
    assert t.tokens == ll.tokens == len(ids) - 1
    assert abs(t.perplexity / ll.perplexity - 1) < 0.01, (t.perplexity, ll.perplexity)
    # token by token too: no systematic shift (an extra BOS or an off-by-one would show here)
    assert len(a) == len(b) == len(ids) - 1
    assert abs(sum(x - y for x, y in zip(a, b)) / len(a)) < 0.02
    assert sum(abs(x - y) > 1.0 for x, y in zip(a, b)) < len(a) * 0.02


def test_cli_text_and_json_on_llama_cpp(gguf_path, prose_scores):
    r = run_cli("perplexity", "-m", str(gguf_path), str(PROSE), check=True)
    lines = dict(line.split(": ", 1) for line in r.stdout.splitlines())
    assert math.isclose(float(lines["perplexity"]), prose_scores[2].perplexity, rel_tol=1e-3)
    assert "tokens/s" in lines["speed"] and "llama.cpp" in lines["speed"]
    short = " ".join(PROSE.read_text(encoding="utf-8").split()[:80])
    rec = json.loads(run_cli("perplexity", "-m", str(gguf_path), "--json", "--ctx", "64", "--stride", "32",
                             input=short, check=True).stdout)
    assert rec["backend"] == "llama.cpp" and rec["ctx"] == 64 and rec["stride"] == 32 and rec["windows"] >= 2
    assert rec["tokens"] == rec["text_tokens"] - 1 and rec["tokens_per_s"] > 0
    assert math.isclose(rec["perplexity"], math.exp(rec["mean_nll"]), rel_tol=1e-9)


def test_cli_torch_backend_from_stdin(hf_model_dir, prose_scores):
    rec = json.loads(run_cli("perplexity", "-m", str(hf_model_dir), "--json", "-", input=PROSE.read_bytes(),
                             check=True).stdout)
    assert rec["backend"] == "torch" and rec["tokens"] == prose_scores[1].tokens
    assert math.isclose(rec["perplexity"], prose_scores[1].perplexity, rel_tol=1e-4)


@pytest.mark.parametrize("args,needle,code", [
    (["/nonexistent/notes.txt"], "file not found", 2),
    (["--stride", "0", "x.txt"], "--stride", 2),
    (["--ctx", "1", "x.txt"], "--ctx", 2),
])
def test_cli_errors(gguf_path, args, needle, code):
    r = run_cli("perplexity", "-m", str(gguf_path), *args)
    assert r.returncode == code and needle in r.stderr and "Traceback" not in r.stderr
    assert len([line for line in r.stderr.splitlines() if line.strip()]) == 1


def test_cli_text_too_short(gguf_path):
    r = run_cli("perplexity", "-m", str(gguf_path), input="Hi")
    assert r.returncode == 2 and "too short" in r.stderr and "Traceback" not in r.stderr
