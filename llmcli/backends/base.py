"""The Backend interface and the value types that cross it.

Commands talk to a ``Backend`` only through this module's types, so they never
need to know whether llama.cpp, torch or a server is behind it. The shared generation
loop lives in ``core.py``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from llmcli.params import PARAMS, SAMPLING_NAMES, check_seed_span


@dataclass(frozen=True)
class Message:
    role: str  # "system" | "user" | "assistant"
    content: str
    # A reasoning model's thinking for an assistant turn. Templates that want it back read
    # ``message.reasoning_content``; all others never see it.
    reasoning: str = ""

    def to_dict(self) -> dict:
        d = {"role": self.role, "content": self.content}
        if self.reasoning:
            d["reasoning_content"] = self.reasoning
        return d


CONSTRAINT_FLAGS = {"json_schema": "--json-schema", "gbnf": "--grammar"}


@dataclass(frozen=True)
class Constraint:
    """Structured output: what every generated text must match. ``kind`` is "json_schema" (``text``
    is the schema as compact JSON) or "gbnf" (``text`` is a llama.cpp GBNF grammar). Built once at
    the command line's boundary (the file read, the JSON parsed); ``source`` names it in errors."""

    kind: str
    text: str
    source: str = "inline"

    @property
    def flag(self) -> str:
        return CONSTRAINT_FLAGS[self.kind]

    def schema(self):
        import json

        return json.loads(self.text)


@dataclass(frozen=True)
class SamplingParams:
    """Every knob that shapes sampling; one type for every command and both backends.

    Ranges, defaults and the flag named in errors come from the parameter table
    (``llmcli.params``); a test checks that these fields are exactly its sampling rows.
    ``max_tokens=None`` means "until end of sequence or the context window is full".
    ``temperature == 0`` means greedy decoding (top-k/top-p/min-p are then irrelevant).
    ``seed=None`` means a fresh random seed per run (reported in the stats).
    """

    max_tokens: int | None = PARAMS["max_tokens"].default
    temperature: float = PARAMS["temperature"].default
    top_k: int = PARAMS["top_k"].default
    top_p: float = PARAMS["top_p"].default
    min_p: float = PARAMS["min_p"].default
    repeat_penalty: float = PARAMS["repeat_penalty"].default
    no_repeat_ngram_size: int = PARAMS["no_repeat_ngram_size"].default
    seed: int | None = PARAMS["seed"].default
    stop: tuple[str, ...] = PARAMS["stop"].default
    reasoning: str | None = PARAMS["reasoning"].default  # read by chat-template rendering, not by sampling
    reasoning_budget: int | None = PARAMS["reasoning_budget"].default  # enforced in llmcli.streaming
    n: int = PARAMS["n"].default
    # Not a table row (a flag's file or inline JSON becomes one value at the boundary, see
    # cli/options.read_constraint); never saved with a chat session.
    constraint: Constraint | None = None

    FIELDS = SAMPLING_NAMES

    def __post_init__(self) -> None:
        # Validate once, here, so every command and backend can trust the values; errors name the flag.
        for name in self.FIELDS:
            p = PARAMS[name]
            object.__setattr__(self, name, p.check(getattr(self, name), p.flag))
        check_seed_span(self.seed, self.n)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def replace(self, **changes) -> SamplingParams:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = {name: getattr(self, name) for name in self.FIELDS}
        d["stop"] = list(self.stop)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SamplingParams:
        return cls(**{k: v for k, v in d.items() if k in cls.FIELDS})


@dataclass
class TokenEvent:
    """Generated text as it is released (may be empty while a UTF-8 sequence or a possible stop
    string is still incomplete). ``token_id`` is the generated id, or -1 when the backend has
    no ids (a server's text chunk) or for the held-back tail; ``tokens`` is how many generated
    tokens the event stands for (0 for the tail)."""

    token_id: int
    text: str
    tokens: int = 1


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    prompt_tokens_processed: int = 0  # < prompt_tokens when a cached prefix was reused
    generated_tokens: int = 0
    time_to_first_token: float = 0.0  # seconds, includes prompt processing
    generation_seconds: float = 0.0  # after the first token
    finish_reason: str = "stop"  # "stop" (EOS or stop string) | "length" | "interrupted" | "error"
    seed: int | None = None

    @property
    def prompt_tokens_per_second(self) -> float:
        t = self.time_to_first_token
        return self.prompt_tokens_processed / t if t > 0 else 0.0

    @property
    def generation_tokens_per_second(self) -> float:
        # The first token is produced by prompt processing; rate the rest.
        n = self.generated_tokens - 1
        return n / self.generation_seconds if n > 0 and self.generation_seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "prompt_tokens_processed": self.prompt_tokens_processed,
            "generated_tokens": self.generated_tokens,
            "time_to_first_token_s": round(self.time_to_first_token, 6),
            "generation_s": round(self.generation_seconds, 6),
            "prompt_tokens_per_s": round(self.prompt_tokens_per_second, 3),
            "generation_tokens_per_s": round(self.generation_tokens_per_second, 3),
        }


@dataclass
class Finish:
    """The last event of a stream: the whole text (stop string removed) and the stats."""

    text: str
    token_ids: list[int] = field(default_factory=list)
    stats: GenerationStats = field(default_factory=GenerationStats)


StreamEvent = TokenEvent | Finish


@dataclass(frozen=True)
class TextChunk:
    """What a backend without token ids (a server's stream) hands ``textstream.drive``, instead of
    an id: a piece of generated text, how many tokens it stands for, and — on the server's last
    chunk — its finish reason ("stop" | "length"). Ids, when the server sends them, go in
    ``token_ids``."""

    text: str
    tokens: int = 1
    token_ids: tuple[int, ...] = ()
    finish_reason: str | None = None


@dataclass(frozen=True)
class Prompt:
    """A prompt in every form a command has it: local backends evaluate ``ids``; a server backend
    sends ``messages`` (its server applies the chat template) or ``text`` (a raw completion).
    ``ids`` may be empty when the backend cannot tokenize. Build one with ``Backend.encode``."""

    ids: tuple[int, ...] = ()
    messages: tuple[Message, ...] = ()
    text: str | None = None


def prompt_ids(prompt: Prompt | Sequence[int]) -> list[int]:
    """The ids of a prompt given as a ``Prompt`` or as plain ids."""
    return list(prompt.ids) if isinstance(prompt, Prompt) else list(prompt)


@dataclass(frozen=True)
class BackendInfo:
    """What ``-v`` prints: which backend, on which device and dtype, and why."""

    backend: str
    device: str
    dtype: str
    reason: str


SAMPLING_FIELDS = frozenset({"temperature", "top_k", "top_p", "min_p", "repeat_penalty", "no_repeat_ngram_size",
                             "seed"})


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do beyond the methods every backend has. Commands ask these, never a
    backend's type or name, and never probe with ``getattr``.

    ``sampling`` lists the SamplingParams fields the backend honours natively; a field outside it
    set to anything but its default is refused by ``core.check_params`` with a UsageError (a
    backend never ignores a parameter). ``max_tokens``, ``stop`` and ``n`` are always honoured:
    the core (``textstream.drive``) and the commands implement them for every backend."""

    token_ids: bool = True  # stream() reports the generated ids (a server may give only text)
    tokenize: str = "local"  # "local" | "server" | "none": where tokenize/detokenize run
    count_chat: bool = True  # chat_ids() works: a conversation's tokens can be counted (context fitting)
    prefill: bool = False  # prefill(ids) evaluates a prefix ahead of the next prompt
    logprobs: bool = False  # logprobs(ids): log p of each id given the ones before it
    grammar: frozenset[str] = frozenset()  # Constraint kinds enforced while decoding ("json_schema", "gbnf")
    parallel: int = 1  # > 1: decoder(n) runs up to this many sequences together (generate --each-line --parallel)
    samples_together: bool = False  # --n: the samples run at once through decoder(n), each equal to its single run
    sampling: frozenset[str] = SAMPLING_FIELDS

    def unsupported(self, params: SamplingParams) -> list[str]:
        """The fields of ``params`` this backend cannot honour: not in ``sampling`` and not at
        their default value."""
        defaults = SamplingParams()
        return [name for name in sorted(SAMPLING_FIELDS - self.sampling)
                if getattr(params, name) != getattr(defaults, name)]


@runtime_checkable
class Backend(Protocol):
    """What every backend offers. Optional abilities are declared in ``capabilities``; the
    methods behind a capability that is False raise a clear LlmcliError."""

    name: str
    n_ctx: int
    info: BackendInfo
    capabilities: Capabilities

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]: ...

    def detokenize(self, ids: Sequence[int]) -> str: ...

    def token_pieces(self, ids: Sequence[int]) -> list[str]: ...

    def chat_prompt(self, messages: Sequence[Message], *, add_generation_prompt: bool = True,
                    reasoning: str | None = None) -> str: ...

    def chat_ids(self, messages: Sequence[Message], *, add_generation_prompt: bool = True,
                 reasoning: str | None = None) -> list[int]: ...

    def encode(self, *, messages: Sequence[Message] | None = None, text: str | None = None,
               reasoning: str | None = None) -> Prompt: ...

    @property
    def has_chat_template(self) -> bool: ...

    def stream(self, prompt: Prompt | Sequence[int], params: SamplingParams) -> Iterator[StreamEvent]: ...

    def prefill(self, ids: Sequence[int]) -> int: ...  # capabilities.prefill

    def logprobs(self, ids: list[int]) -> list[float]: ...  # capabilities.logprobs

    def compiled(self, constraint: Constraint | None): ...  # capabilities.grammar: check (and prepare) one

    def reset(self) -> None: ...

    def close(self) -> None: ...
