"""The backend contract: the same tests over every backend (real models, real processes).

A backend joins by one line in ``SUBJECTS``: the name of a fixture that yields a ``Subject``
(the loaded backend, plus the ``llmcli`` arguments and environment that select the same model
and backend in a subprocess). A parameter a backend cannot honour must be refused with an
LlmcliError (``Capabilities.sampling``), never ignored: the tests check either the behaviour or
the refusal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from conftest import run_cli
from llmcli.backends.base import SAMPLING_FIELDS, Capabilities, Finish, Message, Prompt, SamplingParams, TokenEvent
from llmcli.backends.core import check_params
from llmcli.errors import LlmcliError, ModelError, UsageError

SUBJECTS = [
    pytest.param("llama_subject", id="llama.cpp"),
    pytest.param("torch_subject", id="torch"),
    pytest.param("remote_lcpp_subject", id="remote-llama-cpp-python"),
    pytest.param("remote_llama_server_subject", id="remote-llama-server"),
]

STORY = "Write a long story about a dragon who learns to paint."
GREEDY = SamplingParams(temperature=0, max_tokens=24)


@dataclass
class Subject:
    backend: object
    cli_args: list[str]  # select this model and backend on the llmcli command line
    env: dict = field(default_factory=dict)


@pytest.fixture(scope="session")
def llama_subject(llama_backend, gguf_path):
    return Subject(llama_backend, ["-m", str(gguf_path), "--backend", "llama.cpp"])


@pytest.fixture(scope="session")
def torch_subject(torch_backend, gguf_path, torch_cache_dir, converted_gguf):
    # The GGUF through torch reuses the session's conversion cache (converted_gguf fills it).
    return Subject(torch_backend, ["-m", str(gguf_path), "--backend", "torch"],
                   {"LLMCLI_CACHE_DIR": str(torch_cache_dir)})


def _remote_subject(server) -> Subject:
    from llmcli.backends.remote import RemoteBackend
    from llmcli.backends.remote_http import ApiKey

    return Subject(RemoteBackend(server.url, None, ApiKey(None, "none")), ["-m", server.url])


@pytest.fixture(scope="session")
def remote_lcpp_subject(lcpp_server):
    return _remote_subject(lcpp_server)


@pytest.fixture(scope="session")
def remote_llama_server_subject(llama_server):
    return _remote_subject(llama_server)


@pytest.fixture(params=SUBJECTS)
def subject(request) -> Subject:
    s = request.getfixturevalue(request.param)
    s.backend.reset()
    return s


@dataclass
class Run:
    events: list[TokenEvent]
    finish: Finish

    @property
    def text(self) -> str:
        return self.finish.text

    @property
    def ids(self) -> list[int]:
        return self.finish.token_ids


def run(backend, prompt: Prompt, params: SamplingParams) -> Run:
    events = list(backend.stream(prompt, params))
    finish = events.pop()
    assert isinstance(finish, Finish)
    assert "".join(e.text for e in events) == finish.text
    return Run(events, finish)


def chat(backend, text: str, system: str | None = None) -> Prompt:
    return backend.encode(messages=([Message("system", system)] if system else []) + [Message("user", text)])


def honours(backend, name: str) -> bool:
    return name in backend.capabilities.sampling


def refuses(backend, prompt: Prompt, params: SamplingParams) -> None:
    with pytest.raises(LlmcliError):
        run(backend, prompt, params)


# --- generation ----------------------------------------------------------------------------------------

def test_greedy_is_deterministic(subject):
    b = subject.backend
    p = chat(b, STORY)
    first = run(b, p, GREEDY)
    b.reset()
    second = run(b, p, GREEDY)
    third = run(b, p, GREEDY)  # the cache now holds this prompt: reuse must not change the reply
    assert first.text.strip()
    assert first.text == second.text == third.text
    assert first.ids == second.ids == third.ids
    assert first.finish.stats.generated_tokens == 24 and first.finish.stats.finish_reason == "length"


def test_same_seed_same_text_different_seeds_differ(subject):
    b = subject.backend
    p = chat(b, STORY)
    params = SamplingParams(temperature=1.0, max_tokens=24, seed=7)
    if not honours(b, "seed"):
        return refuses(b, p, params)
    a, again = run(b, p, params), run(b, p, params)
    assert a.text == again.text and a.finish.stats.seed == 7
    others = {run(b, p, params.replace(seed=s)).text for s in (8, 9, 10)}
    assert others - {a.text}, "different seeds all gave the same text"


def test_unseeded_runs_report_the_seed_they_drew(subject):
    b = subject.backend
    p = chat(b, STORY)
    r = run(b, p, SamplingParams(temperature=1.0, max_tokens=12))
    seed = r.finish.stats.seed
    assert isinstance(seed, int)
    if honours(b, "seed"):
        assert run(b, p, SamplingParams(temperature=1.0, max_tokens=12, seed=seed)).text == r.text


def test_max_tokens_is_exact(subject):
    b = subject.backend
    p = chat(b, STORY)
    long = run(b, p, GREEDY)
    short = run(b, p, GREEDY.replace(max_tokens=5))
    s = short.finish.stats
    assert s.generated_tokens == 5 and s.finish_reason == "length"
    assert sum(e.tokens for e in short.events) == 5
    assert long.text.startswith(short.text)
    if b.capabilities.token_ids:
        assert short.ids == long.ids[:5]


def test_stop_string_cuts_before_it_and_is_not_included(subject):
    b = subject.backend
    p = chat(b, STORY)
    full = run(b, p, SamplingParams(temperature=0, max_tokens=40)).text
    assert len(full) > 30
    # Start inside a word so the stop string does not line up with token boundaries.
    stop = full[14:19]
    assert stop.strip()
    cut = run(b, p, SamplingParams(temperature=0, max_tokens=40, stop=(stop,)))
    assert cut.text == full[: full.index(stop)]
    assert cut.finish.stats.finish_reason == "stop"
    assert stop not in "".join(e.text for e in cut.events)


def test_multibyte_characters_are_never_split(subject):
    b = subject.backend
    p = b.encode(text="Emoji row: 🐉🎨🐉🎨🐉🎨🐉🎨🐉🎨 and 日本語の文章、日本語の文章、日本語の文章、")
    r = run(b, p, SamplingParams(temperature=0, max_tokens=32))
    assert "\ufffd" not in r.text
    assert any(ord(c) > 0x7F for c in r.text), f"no multibyte character to assemble: {r.text!r}"
    for e in r.events:
        e.text.encode("utf-8")  # every released piece is whole characters
    if b.capabilities.token_ids:
        pieces = b.token_pieces(r.ids)
        # The test means something only if some character arrived in more than one token.
        assert any("\\x" in piece for piece in pieces), pieces
        held = [e for e in r.events if e.tokens and not e.text]
        assert held, "no token was held back while a character was incomplete"


def test_prefix_reuse_processes_fewer_tokens_and_changes_nothing(subject):
    b = subject.backend
    system = "You are a careful assistant who answers in one short paragraph about painting and colours."
    warm = chat(b, "What colour is the sky?", system)
    target = chat(b, "Name three colours a dragon would paint with.", system)
    if not b.capabilities.token_ids:  # a server reuses prefixes on its own: the reply must not depend on it
        first = run(b, target, GREEDY)
        run(b, warm, GREEDY)
        assert run(b, target, GREEDY).text == first.text
        return
    b.reset()
    fresh = run(b, target, GREEDY)
    assert fresh.finish.stats.prompt_tokens_processed == fresh.finish.stats.prompt_tokens
    b.reset()
    run(b, warm, GREEDY)
    reused = run(b, target, GREEDY)
    s = reused.finish.stats
    assert s.prompt_tokens == fresh.finish.stats.prompt_tokens
    assert s.prompt_tokens_processed < s.prompt_tokens - 10
    assert reused.text == fresh.text and reused.ids == fresh.ids


def test_prefill_then_generate_matches_fresh(subject):
    b = subject.backend
    if not b.capabilities.prefill:
        return
    msgs = [Message("user", "What colour is the sky?"), Message("assistant", "The sky is blue.")]
    history = b.chat_ids(msgs, add_generation_prompt=False)
    target = b.encode(messages=msgs + [Message("user", "And the grass?")])
    b.reset()
    fresh = run(b, target, GREEDY)
    b.reset()
    assert b.prefill(history) == len(history)
    assert b.prefill(history) == 0  # already there
    after = run(b, target, GREEDY)
    assert after.finish.stats.prompt_tokens_processed < len(target.ids) - len(history) + 3
    assert after.ids == fresh.ids


def test_no_repeat_ngram_size_holds_on_the_generated_ids(subject):
    b = subject.backend
    p = b.encode(text="one two three four one two three four one two three four one two three four one two")
    params = SamplingParams(temperature=0, max_tokens=40)
    if not honours(b, "no_repeat_ngram_size"):
        return refuses(b, p, params.replace(no_repeat_ngram_size=3))
    free = run(b, p, params)
    assert _repeated_ngram(list(p.ids), free.ids, 3), "the prompt no longer makes the model repeat itself"
    banned = run(b, p, params.replace(no_repeat_ngram_size=3))
    assert len(banned.ids) > 10
    assert not _repeated_ngram(list(p.ids), banned.ids, 3), banned.ids


def _repeated_ngram(prompt: list[int], generated: list[int], n: int) -> tuple | None:
    """The first n-gram ending in the generated part that already occurred earlier (prompt included)."""
    seq = prompt + generated
    seen = {tuple(seq[i:i + n]) for i in range(len(prompt) - n + 1)}
    for end in range(max(len(prompt), n), len(seq) + 1):
        gram = tuple(seq[end - n:end])
        if end > len(prompt) and gram in seen:
            return gram
        seen.add(gram)
    return None


def test_every_sampling_parameter_is_honoured_or_refused(subject):
    b = subject.backend
    p = chat(b, STORY)
    changed = {"temperature": 0.7, "top_k": 5, "top_p": 0.5, "min_p": 0.2, "repeat_penalty": 1.3,
               "no_repeat_ngram_size": 2, "seed": 3}
    assert set(changed) == SAMPLING_FIELDS
    for name, value in changed.items():
        params = SamplingParams(temperature=0.7, max_tokens=4, seed=1).replace(**{name: value})
        if honours(b, name):
            assert run(b, p, params).finish.stats.generated_tokens == 4
        else:
            refuses(b, p, params)


def test_unsupported_parameter_is_a_usage_error_naming_the_flag():
    caps = Capabilities(sampling=frozenset({"temperature", "seed"}))
    check_params("x", caps, SamplingParams(temperature=0.3, seed=4))
    with pytest.raises(UsageError, match="the x backend cannot honour") as e:
        check_params("x", caps, SamplingParams(top_k=5, no_repeat_ngram_size=2))
    assert "--top-k" in e.value.message and "--no-repeat-ngram-size" in e.value.message


# --- errors --------------------------------------------------------------------------------------------

def test_empty_prompt_ids_are_refused(subject):
    with pytest.raises(ModelError, match="empty"):
        subject.backend.stream(Prompt(()), GREEDY)


def test_out_of_range_ids_are_refused(subject):
    b = subject.backend
    if not b.capabilities.token_ids:
        return
    ids = list(chat(b, "Hi").ids)
    for bad in (-1, 10**9):
        with pytest.raises(ModelError, match="outside the vocabulary"):
            b.stream(ids + [bad], GREEDY)


def test_prompt_longer_than_the_window_is_refused(subject):
    b = subject.backend
    if not b.capabilities.token_ids:
        return  # a server checks its own window (tests/test_remote.py)
    ids = list(chat(b, "Hi").ids)
    too_long = (ids * (b.n_ctx // len(ids) + 2))[: b.n_ctx + 5]
    with pytest.raises(ModelError, match="context window"):
        b.stream(too_long, GREEDY)
    # nothing was evaluated: the backend still works
    assert run(b, chat(b, "Hi"), GREEDY.replace(max_tokens=3)).finish.stats.generated_tokens == 3


# --- through the command line ----------------------------------------------------------------------------

def test_cli_n_samples_use_seed_plus_i(subject):
    args = ["generate", *subject.cli_args, "--temperature", "1.0", "--max-tokens", "12", "--ctx", "1024"]
    r = run_cli(*args, "--n", "3", "--seed", "11", "--jsonl", "Name a colour", env=subject.env, check=True)
    records = [json.loads(line) for line in r.stdout.splitlines()]
    assert [x["index"] for x in records] == [0, 1, 2]
    assert [x["seed"] for x in records] == [11, 12, 13]
    assert all(x["usage"]["completion_tokens"] >= 1 for x in records)
    single = json.loads(run_cli(*args, "--seed", "13", "--json", "Name a colour", env=subject.env,
                                check=True).stdout)
    assert single["text"] == records[2]["text"]
