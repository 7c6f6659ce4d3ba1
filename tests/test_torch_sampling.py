"""Token selection of the torch backend: llama.cpp's meaning for every knob, on crafted logits."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from llmcli.backends.base import SamplingParams  # noqa: E402
from llmcli.backends.torch_sampling import TokenPicker, apply_repeat_penalty, keep_mask  # noqa: E402


def logits_of(probs):
    return torch.log(torch.tensor(probs, dtype=torch.float32))


def test_repeat_penalty_divides_positive_and_multiplies_negative_once_per_token():
    x = torch.tensor([2.0, -2.0, 1.0, 0.0])
    apply_repeat_penalty(x, [0, 1, 1, 1, 3], 2.0)
    assert x.tolist() == [1.0, -4.0, 1.0, 0.0]


def test_top_p_keeps_the_token_that_crosses_the_mass():
    vals = logits_of([0.5, 0.3, 0.15, 0.05])
    assert keep_mask(vals, SamplingParams(top_p=0.8, min_p=0)).tolist() == [True, True, False, False]
    assert keep_mask(vals, SamplingParams(top_p=0.81, min_p=0)).tolist() == [True, True, True, False]
    assert keep_mask(vals, SamplingParams(top_p=0.1, min_p=0)).tolist() == [True, False, False, False]
    assert all(keep_mask(vals, SamplingParams(top_p=1.0, min_p=0)).tolist())


def test_min_p_is_relative_to_the_top_probability_before_temperature():
    vals = logits_of([0.5, 0.3, 0.15, 0.05])
    # 0.2 × 0.5 = 0.1: 0.15 stays, 0.05 goes — whatever the temperature
    for t in (0.1, 1.0, 5.0):
        assert keep_mask(vals, SamplingParams(top_p=1.0, min_p=0.2, temperature=t)).tolist() == \
            [True, True, True, False]


def _draws(params, logits, n=400, seed=0):
    picker = TokenPicker(params, seed, [])
    return [picker.pick(logits) for _ in range(n)]


def test_greedy_takes_argmax_after_penalty_and_bans():
    logits = torch.tensor([1.0, 3.0, 2.5, 0.5])
    assert TokenPicker(SamplingParams(temperature=0), 0, []).pick(logits) == 1
    # token 1 seen recently: 3.0 / 2 = 1.5 < 2.5
    assert TokenPicker(SamplingParams(temperature=0, repeat_penalty=2.0), 0, [1]).pick(logits) == 2
    # history 2 1 2 with no-repeat-ngram 2: "2 1" exists, so after "2" token 1 is banned
    assert TokenPicker(SamplingParams(temperature=0, no_repeat_ngram_size=2), 0, [2, 1, 2]).pick(logits) == 2
    assert logits.tolist() == [1.0, 3.0, 2.5, 0.5]  # input untouched


def test_top_k_limits_candidates():
    logits = logits_of([0.3, 0.25, 0.2, 0.15, 0.1])
    seen = set(_draws(SamplingParams(temperature=1.0, top_k=2, top_p=1.0, min_p=0.0), logits))
    assert seen == {0, 1}
    seen = set(_draws(SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0), logits))
    assert seen == {0, 1, 2, 3, 4}


def test_temperature_sharpens_and_flattens():
    logits = logits_of([0.6, 0.4])
    cold = _draws(SamplingParams(temperature=0.2, top_k=0, top_p=1.0, min_p=0.0), logits)
    hot = _draws(SamplingParams(temperature=5.0, top_k=0, top_p=1.0, min_p=0.0), logits)
    assert cold.count(0) / len(cold) > 0.8
    assert 0.4 < hot.count(0) / len(hot) < 0.65


def test_sampled_frequencies_follow_the_distribution():
    probs = [0.5, 0.3, 0.2]
    draws = _draws(SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0), logits_of(probs), n=3000)
    for i, p in enumerate(probs):
        assert math.isclose(draws.count(i) / len(draws), p, abs_tol=0.04)


def test_seed_reproduces():
    logits = torch.randn(1000, generator=torch.Generator().manual_seed(1))
    params = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)
    assert _draws(params, logits, 50, seed=7) == _draws(params, logits, 50, seed=7)
    assert _draws(params, logits, 50, seed=7) != _draws(params, logits, 50, seed=8)
