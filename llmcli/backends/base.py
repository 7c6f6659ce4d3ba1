"""The Backend interface and the value types that cross it.

Commands talk to a ``Backend`` only through this module's types, so they never
need to know whether llama.cpp or torch is behind it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from llmcli.errors import ModelError
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
        d = dataclasses.asdict(self)
        d["stop"] = list(self.stop)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SamplingParams:
        return cls(**{k: v for k, v in d.items() if k in cls.FIELDS})


@dataclass
class TokenEvent:
    """One generated token and the text it released (may be empty while a UTF-8
    sequence or a possible stop string is still incomplete)."""

    token_id: int
    text: str


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    prompt_tokens_processed: int = 0  # < prompt_tokens when a cached prefix was reused
    generated_tokens: int = 0
    time_to_first_token: float = 0.0  # seconds, includes prompt processing
    generation_seconds: float = 0.0  # after the first token
    finish_reason: str = "stop"  # "stop" (EOS or stop string) | "length" | "interrupted"
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
class BackendInfo:
    """What ``-v`` prints: which backend, on which device and dtype, and why."""

    backend: str
    device: str
    dtype: str
    reason: str


@runtime_checkable
class Backend(Protocol):
    name: str
    n_ctx: int
    info: BackendInfo

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]: ...

    def detokenize(self, ids: Sequence[int]) -> str: ...

    def token_pieces(self, ids: Sequence[int]) -> list[str]: ...

    def chat_prompt(self, messages: Sequence[Message], *, add_generation_prompt: bool = True,
                    reasoning: str | None = None) -> str: ...

    def chat_ids(self, messages: Sequence[Message], *, add_generation_prompt: bool = True,
                 reasoning: str | None = None) -> list[int]: ...

    @property
    def has_chat_template(self) -> bool: ...

    def stream(self, prompt_ids: list[int], params: SamplingParams) -> Iterator[StreamEvent]: ...

    def logprobs(self, ids: list[int]) -> list[float]: ...

    def reset(self) -> None: ...

    def close(self) -> None: ...


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading ids two sequences share: the part of a KV cache a new prompt can reuse."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class SharedTextMethods:
    """Id checks, ``detokenize``, ``token_pieces``, ``chat_prompt`` and ``chat_ids`` written once
    for both backends, so the two render ids and chat prompts identically.

    Needs ``n_vocab``, ``add_bos``, ``bos_id``, ``tokenize``, ``_piece(token, special) -> bytes``
    and ``_template() -> ChatTemplate``."""

    n_vocab: int
    add_bos: bool
    bos_id: int

    def _piece(self, token: int, special: bool) -> bytes:  # pragma: no cover - supplied by the backend
        raise NotImplementedError

    def _template(self):  # pragma: no cover - supplied by the backend
        raise NotImplementedError

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]:
        raise NotImplementedError  # pragma: no cover - supplied by the backend

    def _check_ids(self, ids: Sequence[int]) -> None:
        for t in ids:
            if not 0 <= t < self.n_vocab:
                raise ModelError(f"token id {t} is outside the vocabulary (0..{self.n_vocab - 1})")

    def detokenize(self, ids: Sequence[int]) -> str:
        """Inverse of ``tokenize``: special tokens are rendered as their text, except the
        BOS that tokenize adds on its own, so detokenize(tokenize(x)) == x."""
        self._check_ids(ids)
        ids = list(ids)
        if ids and self.add_bos and ids[0] == self.bos_id:
            ids = ids[1:]
        return b"".join(self._piece(t, True) for t in ids).decode("utf-8", errors="replace")

    def token_pieces(self, ids: Sequence[int]) -> list[str]:
        self._check_ids(ids)
        return [self._piece(t, True).decode("utf-8", errors="backslashreplace") for t in ids]

    def chat_prompt(self, messages: Sequence[Message], *, add_generation_prompt: bool = True,
                    reasoning: str | None = None) -> str:
        template = self._template()
        return template.render(messages, add_generation_prompt=add_generation_prompt,
                               **template.reasoning_vars(reasoning))

    def chat_ids(self, messages: Sequence[Message], *, add_generation_prompt: bool = True,
                 reasoning: str | None = None) -> list[int]:
        ids = self.tokenize(self.chat_prompt(messages, add_generation_prompt=add_generation_prompt,
                                             reasoning=reasoning),
                            add_special=True, parse_special=True)
        # Templates that write the BOS text themselves would otherwise get two.
        if len(ids) >= 2 and self.bos_id is not None and ids[0] == ids[1] == self.bos_id:
            ids = ids[1:]
        return ids
