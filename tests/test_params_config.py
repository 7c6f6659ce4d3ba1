"""SamplingParams validation, config precedence, and pure helpers of the CLI layer."""

from __future__ import annotations

import pytest

from llmcli.backends.base import SamplingParams
from llmcli.backends.hardware import parse_physical_cores
from llmcli.backends.sampling import NgramBlocker
from llmcli.cli.generate import build_prompt, resolve_think_mode
from llmcli.cli.options import parse_flags, sampling_params, unescape
from llmcli.cli.tokenize import parse_ids
from llmcli.config import Settings, env_settings, merge, parse_config
from llmcli.errors import UsageError


@pytest.mark.parametrize("kwargs", [
    {"temperature": -0.1}, {"top_p": 1.5}, {"top_p": 0}, {"n": 0}, {"max_tokens": 0}, {"min_p": 2},
    {"top_k": -1}, {"repeat_penalty": 0}, {"no_repeat_ngram_size": -1}, {"stop": ("",)},
    {"temperature": float("nan")}, {"seed": -1},
])
def test_invalid_sampling_rejected(kwargs):
    with pytest.raises(UsageError) as e:
        SamplingParams(**kwargs)
    assert "--" in e.value.message  # names the flag the user typed


def test_sampling_roundtrip_and_greedy():
    p = SamplingParams(temperature=0, stop=["x"], seed=3)
    assert p.greedy and p.stop == ("x",)
    assert SamplingParams.from_dict(p.to_dict()) == p


def test_precedence_defaults_file_env_flags():
    file_layer = parse_config('model = "a.gguf"\n[sampling]\ntemperature = 0.3\ntop_k = 5\n', "cfg")
    env_layer = env_settings({"LLMCLI_TEMPERATURE": "0.5", "LLMCLI_MODEL": "b.gguf"})
    settings = merge(file_layer, env_layer)
    assert settings.general["model"] == "b.gguf"
    p = sampling_params(settings, temperature=None, top_k=None, max_tokens=7)
    assert (p.temperature, p.top_k, p.max_tokens) == (0.5, 5, 7)
    p = sampling_params(settings, temperature=0.0)
    assert p.temperature == 0.0


@pytest.mark.parametrize("text", ["temperature = 1", "[sampling]\nbogus = 1", "[sampling]\ntop_k = 'x'", "not toml ["])
def test_bad_config_is_a_clear_error(text):
    with pytest.raises(UsageError):
        parse_config(text, "config.toml")


def test_env_bad_value():
    with pytest.raises(UsageError, match="LLMCLI_TOP_K"):
        env_settings({"LLMCLI_TOP_K": "many"})


def test_prompt_composition():
    assert build_prompt("Summarise", "diff text\n") == "diff text\n\nSummarise"
    assert build_prompt(None, "only stdin") == "only stdin"
    assert build_prompt("only arg", None) == "only arg"
    with pytest.raises(UsageError):
        build_prompt("  ", None)
    with pytest.raises(UsageError):
        build_prompt(None, None)


def test_think_mode_default_depends_on_tty():
    assert resolve_think_mode(None, True) == "show"
    assert resolve_think_mode(None, False) == "stderr"
    assert resolve_think_mode("hide", True) == "hide"
    with pytest.raises(UsageError, match="--think"):  # the parameter table parses the flag
        parse_flags({"think": "loud"})


def test_unescape_and_parse_ids():
    assert unescape(r"\n\n") == "\n\n"
    assert unescape(r"a\\nb") == "a\\nb"
    assert parse_ids(["1", "2,3"]) == [1, 2, 3]
    assert parse_ids(["[4, 5]"]) == [4, 5]
    with pytest.raises(UsageError):
        parse_ids(["x"])


def test_ngram_blocker():
    b = NgramBlocker(2, [1, 2, 3, 1])
    assert b.banned() == {2}  # "1 2" exists, so 2 may not follow 1 again
    b.append(5)
    assert b.banned() == set()
    assert NgramBlocker(3, [7, 8, 9, 7, 8]).banned() == {9}


def test_physical_cores_parse():
    text = "processor: 0\nphysical id: 0\ncore id: 0\n\nprocessor: 1\nphysical id: 0\ncore id: 0\n\n" \
           "processor: 2\nphysical id: 0\ncore id: 1\n"
    assert parse_physical_cores(text) == 2
    assert parse_physical_cores("") is None


def test_settings_default_empty():
    assert Settings().sampling == {}
