"""The backend core: what every backend's generation shares, written once.

Two layers:

- ``open_stream`` and ``check_params`` (every backend, the remote one included): a
  parameter the backend cannot honour is refused, the prompt is checked against the
  window, a seed is drawn when none was given, and the stats are started. The backend
  then hands its native output to ``textstream.drive`` (ids or text chunks).
- ``LocalBackend`` (llama.cpp and torch): the KV-cache bookkeeping (which ids are cached,
  how much of a new prompt can reuse them, ``prefill``), the generation loop, the
  ``logprobs`` frame and the chat-template rendering. A subclass supplies only what is
  native to it; the loop has the shape of mlx-lm's ``generate_step``:
  evaluate the prompt, then pick → yield → evaluate the picked id, until the window is full.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from llmcli.backends.base import (Capabilities, Constraint, GenerationStats, Message, Prompt, SamplingParams,
                                  StreamEvent, prompt_ids)
from llmcli.backends.textstream import drive
from llmcli.errors import ModelError, UsageError
from llmcli.params import PARAMS


def check_params(name: str, capabilities: Capabilities, params: SamplingParams) -> None:
    """Refuse, in one line, a sampling parameter this backend cannot honour (never ignore it)."""
    missing = capabilities.unsupported(params)
    if missing:
        flags = ", ".join(PARAMS[f].flag for f in missing)
        raise UsageError(f"the {name} backend cannot honour {flags}", "leave it at its default for this model")


def check_constraint(name: str, capabilities: Capabilities, constraint: Constraint | None) -> None:
    """Refuse structured output a backend cannot enforce: never generate unconstrained instead."""
    if constraint is not None and constraint.kind not in capabilities.grammar:
        raise UsageError(f"the {name} backend cannot enforce {constraint.flag}",
                         "use a backend that can (docs/usage.md, structured output), or drop the flag")


def open_stream(backend, ids: Sequence[int] | None, params: SamplingParams, *,
                n_ctx_train: int | None = None) -> GenerationStats:
    """The checks and set-up every ``stream`` starts with; the stats to hand to ``drive``.
    ``ids`` is None for a backend that sends the prompt as text and cannot count its tokens."""
    check_params(backend.name, backend.capabilities, params)
    check_constraint(backend.name, backend.capabilities, params.constraint)
    if ids is not None:
        if not ids:
            raise ModelError("the prompt is empty after tokenization")
        if len(ids) >= backend.n_ctx:
            raise ModelError(f"the prompt is {len(ids)} tokens but the context window is {backend.n_ctx}",
                             "shorten the input or raise --ctx"
                             + (f" (up to the model's {n_ctx_train})" if n_ctx_train else ""))
    seed = params.seed if params.seed is not None else random.randrange(2**31)
    return GenerationStats(prompt_tokens=len(ids) if ids else 0, seed=seed)


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading ids two sequences share: the part of a KV cache a new prompt can reuse."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class Sampler(Protocol):
    """A backend's native token selection for one stream."""

    def pick(self, state: Any) -> int: ...  # ``state``: what ``_evaluate``/``_step`` returned

    def accept(self, token: int) -> None: ...  # the picked id joins the history (penalties, n-grams)

    def close(self) -> None: ...


class LocalBackend:
    """The Backend interface over a local model with a KV cache. Subclasses supply:

    - ``n_ctx``, ``n_ctx_train``, ``n_vocab``, ``bos_id``, ``add_bos``, ``name``, ``info``;
      ``_cached``: the ids whose keys/values are in the cache, in order;
    - ``_truncate(keep)``: keep the first ``keep`` cached positions (it may keep fewer:
      ``_cached`` says what is left); ``reset()``;
    - ``_evaluate(ids) -> state``: append prompt ids to the cache (in batches), state = what
      the sampler needs for the last position (logits, or None when the library keeps them);
    - ``_step(token) -> state``: append one generated id (the hot path);
    - ``_sampler(params, seed, history) -> Sampler``;
    - ``_logprobs(ids)`` on an empty cache; ``tokenize``; ``_piece(id, special) -> bytes``;
      ``is_end(id)``; ``_template_source()`` and ``_template_specials() -> (bos, eos) text``.

    Prefix reuse: a prompt evaluates only what follows the longest cached prefix it shares,
    but always its last ``MIN_FRESH`` ids (fresh logits). With ``REUSE_DECODED`` False only
    the part of the cache evaluated as a prompt counts (``_exact``): llama.cpp computes a
    token decoded alone very slightly differently from the same token inside a prompt batch,
    so reusing generated tokens would make a reply depend on what the cache held."""

    MIN_FRESH = 1
    REUSE_DECODED = True
    capabilities = Capabilities(token_ids=True, tokenize="local", prefill=True, logprobs=True,
                                grammar=frozenset({"json_schema", "gbnf"}))  # each supplies _compile

    name: str
    n_ctx: int
    n_ctx_train: int
    n_vocab: int
    add_bos: bool
    bos_id: int | None
    _cached: list[int]
    _exact: int = 0  # length of the prefix of _cached that was evaluated as prompt batches

    # --- native steps (supplied by the backend) ---------------------------------------------------
    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]:
        raise NotImplementedError  # pragma: no cover

    def _piece(self, token: int, special: bool) -> bytes:
        raise NotImplementedError  # pragma: no cover

    def is_end(self, token: int) -> bool:
        raise NotImplementedError  # pragma: no cover

    def _truncate(self, keep: int) -> None:
        raise NotImplementedError  # pragma: no cover

    def _evaluate(self, ids: Sequence[int]) -> Any:
        raise NotImplementedError  # pragma: no cover

    def _step(self, token: int) -> Any:
        raise NotImplementedError  # pragma: no cover

    def _sampler(self, params: SamplingParams, seed: int, history: Sequence[int]) -> Sampler:
        raise NotImplementedError  # pragma: no cover

    def _compile(self, constraint: Constraint):
        """The backend's compiled form of a constraint (cached by ``compiled``); a UsageError
        naming what it cannot enforce."""
        raise NotImplementedError  # pragma: no cover

    def _logprobs(self, ids: list[int]) -> list[float]:
        raise NotImplementedError  # pragma: no cover

    def _template_source(self) -> str | None:
        raise NotImplementedError  # pragma: no cover

    def _template_specials(self) -> tuple[str, str]:
        raise NotImplementedError  # pragma: no cover

    # --- ids and text -----------------------------------------------------------------------------
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

    # --- chat template ----------------------------------------------------------------------------
    @property
    def has_chat_template(self) -> bool:
        return bool(self._template_source())

    def _template(self):
        tpl = self.__dict__.get("_tpl")
        if tpl is None:
            from llmcli.chat_template import ChatTemplate

            source = self._template_source()
            if not source:
                raise ModelError("this model has no chat template", "use --raw to send the text as is")
            bos, eos = self._template_specials()
            tpl = self._tpl = ChatTemplate(source, bos_token=bos, eos_token=eos)
        return tpl

    def chat_prompt(self, messages: Sequence[Message], *, add_generation_prompt: bool = True,
                    reasoning: str | None = None) -> str:
        template = self._template()
        return template.render(messages, add_generation_prompt=add_generation_prompt,
                               **template.reasoning_vars(reasoning))

    def chat_ids(self, messages: Sequence[Message], *, add_generation_prompt: bool = True,
                 reasoning: str | None = None) -> list[int]:
        return self._drop_double_bos(self.tokenize(
            self.chat_prompt(messages, add_generation_prompt=add_generation_prompt, reasoning=reasoning),
            add_special=True, parse_special=True))

    def _drop_double_bos(self, ids: list[int]) -> list[int]:
        # Templates that write the BOS text themselves would otherwise get two.
        if len(ids) >= 2 and self.bos_id is not None and ids[0] == ids[1] == self.bos_id:
            return ids[1:]
        return ids

    def encode(self, *, messages: Sequence[Message] | None = None, text: str | None = None,
               reasoning: str | None = None) -> Prompt:
        """A chat prompt (``messages``, rendered with the model's template and ``--reasoning``) or a
        raw one (``text``, tokenized with BOS and special-token text parsed, as ``tokenize`` does)."""
        if messages is not None:
            rendered = self.chat_prompt(messages, reasoning=reasoning)
            ids = self.tokenize(rendered, add_special=True, parse_special=True)
            return Prompt(tuple(self._drop_double_bos(ids)), tuple(messages), rendered)
        if text is None:
            raise UsageError("empty prompt")
        return Prompt(tuple(self.tokenize(text, add_special=True, parse_special=True)), (), text)

    # --- the KV cache -----------------------------------------------------------------------------
    def _reusable(self, ids: Sequence[int]) -> int:
        """How many leading ids of ``ids`` can keep their cached keys/values, so that the result
        is the same as evaluating ``ids`` on an empty cache."""
        keep = common_prefix_len(self._cached, ids)
        if not self.REUSE_DECODED:
            keep = min(keep, self._exact)
        return min(keep, max(len(ids) - self.MIN_FRESH, 0))

    def _load_prompt(self, ids: list[int]) -> tuple[int, Any]:
        """Bring the cache to exactly ``ids``; (how many ids were evaluated, the sampler state)."""
        self._truncate(self._reusable(ids))
        keep = len(self._cached)
        self._exact = min(self._exact, keep)
        state = self._evaluate(ids[keep:])
        self._exact = len(ids)
        return len(ids) - keep, state

    def prefill(self, ids: Sequence[int]) -> int:
        """Evaluate ``ids`` into the KV cache without generating, so that a later prompt starting with
        them evaluates only what follows. Chat calls it with the conversation including the reply just
        generated, while the user types the next message. Returns how many tokens were evaluated."""
        ids = list(ids)
        if len(ids) < 2 or len(ids) >= self.n_ctx:
            return 0
        self._check_ids(ids)
        held = common_prefix_len(self._cached, ids)
        if (held if self.REUSE_DECODED else min(held, self._exact)) >= len(ids):
            return 0
        return self._load_prompt(ids)[0]

    # --- generation -------------------------------------------------------------------------------
    def compiled(self, constraint: Constraint | None):
        """``constraint`` compiled for this backend, once per distinct constraint (a batch or a chat
        compiles its schema once); None for no constraint."""
        if constraint is None:
            return None
        cache = self.__dict__.setdefault("_compiled", {})
        if constraint not in cache:
            cache[constraint] = self._compile(constraint)
        return cache[constraint]

    def stream(self, prompt: Prompt | Sequence[int], params: SamplingParams) -> Iterator[StreamEvent]:
        ids = prompt_ids(prompt)
        stats = open_stream(self, ids, params, n_ctx_train=self.n_ctx_train)
        self._check_ids(ids)
        self.compiled(params.constraint)  # an unenforceable schema fails here, before any evaluation
        return drive(self._generate(ids, params, stats), piece=self._text_piece, is_end=self.is_end,
                     params=params, stats=stats)

    def _text_piece(self, token: int) -> bytes:
        return self._piece(token, False)

    def _generate(self, ids: list[int], params: SamplingParams, stats: GenerationStats) -> Iterator[int]:
        stats.prompt_tokens_processed, state = self._load_prompt(ids)
        sampler = self._sampler(params, stats.seed, ids)
        pick, accept, step, n_ctx = sampler.pick, sampler.accept, self._step, self.n_ctx
        try:
            while True:
                token = pick(state)
                yield token
                if len(self._cached) >= n_ctx:
                    return
                accept(token)
                state = step(token)
        finally:
            sampler.close()

    def logprobs(self, ids: list[int]) -> list[float]:
        """log p(ids[i] | ids[:i]) for i >= 1, over one window."""
        ids = list(ids)
        if len(ids) > self.n_ctx:
            raise ModelError(f"{len(ids)} tokens do not fit the context window of {self.n_ctx}")
        self._check_ids(ids)
        self._truncate(0)
        self._exact = 0
        out = self._logprobs(ids)
        # Every position was evaluated as a prompt batch: the cache is still valid for reuse.
        self._exact = len(self._cached) if len(ids) >= 2 else 0
        return out


def preflight(backend, params: SamplingParams) -> None:
    """Raise now what ``stream`` would refuse before generating (a parameter or a constraint the
    backend cannot honour), so a batch fails once instead of once per line."""
    check_params(backend.name, backend.capabilities, params)
    check_constraint(backend.name, backend.capabilities, params.constraint)
    if params.constraint is not None:  # a backend that declares grammar kinds checks one in compiled()
        backend.compiled(params.constraint)
