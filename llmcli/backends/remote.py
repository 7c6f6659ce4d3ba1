"""The remote backend: a model served by an OpenAI-compatible engine (vLLM, llama.cpp's
``llama-server``, llama-cpp-python's server, …) driven through the official ``openai`` client.

The server applies the chat template and samples; this backend sends the conversation
(streaming chat completions) or the raw text (streaming completions) and hands the text
chunks to ``textstream.drive``, so stop strings, UTF-8, timings and ``--json`` records mean
what they mean for a local model. Sampling knobs beyond the OpenAI API travel in the request
body under the names each engine reads (``ENGINES``); a knob the server cannot honour is
refused by the core, never dropped. Prefix reuse across chat turns is the server's job.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from llmcli.backends.base import (BackendInfo, Capabilities, Constraint, GenerationStats, Message, Prompt,
                                  SamplingParams, StreamEvent, TextChunk)
from llmcli.backends.core import check_constraint, open_stream
from llmcli.backends.remote_http import ApiKey, Server, not_openai
from llmcli.backends.remote_parallel import Handle, RemoteDecoder
from llmcli.backends.textstream import drive
from llmcli.errors import BackendError, ModelError, StreamError, UsageError
from llmcli.params import PARALLEL_MAX

# A server that does not report its window: chat never drops history on its own, the server
# says when a conversation no longer fits.
UNKNOWN_CTX = 1 << 30
OPENAI_SAMPLING = frozenset({"temperature", "top_p", "seed"})
PENALTY_LAST_N = 64  # llama.cpp's window, the one local backends use


@dataclass(frozen=True)
class Engine:
    """What llmcli knows about one engine's OpenAI-compatible server."""

    name: str
    extra: dict = field(default_factory=dict)  # SamplingParams field -> request body field
    tokenize: str | None = None  # "/tokenize" dialect: "llama.cpp" | "vllm" | "llama-cpp-python"
    fixed: dict = field(default_factory=dict)  # body fields always sent (same meaning as local)
    # Structured output (docs/usage.md): the Constraint kinds the engine enforces completely, and
    # the body field that carries a JSON schema on /v1/completions (--raw), where the OpenAI
    # API has no response_format and llama-server ignores one.
    grammar: frozenset[str] = frozenset()
    raw_schema: str | None = None
    parallel: int = PARALLEL_MAX  # requests the engine serves at once (it queues what its slots cannot take)

    @property
    def sampling(self) -> frozenset[str]:
        return OPENAI_SAMPLING | frozenset(self.extra)


# Keyed by the ``owned_by`` field each engine writes in /v1/models.
# GBNF goes only to llama-server (vLLM's grammars are another dialect). llama-cpp-python's server
# gets neither: its schema converter ignores integer bounds, and a GBNF syntax error aborts the
# whole server process (0.3.36). Other servers get none (one that ignores response_format would
# give unconstrained text).
ENGINES = {
    "llamacpp": Engine("llama.cpp server", {"top_k": "top_k", "min_p": "min_p", "repeat_penalty": "repeat_penalty"},
                       "llama.cpp", {"repeat_last_n": PENALTY_LAST_N, "cache_prompt": True},
                       frozenset({"json_schema", "gbnf"}), "json_schema"),
    "vllm": Engine("vLLM", {"top_k": "top_k", "min_p": "min_p", "repeat_penalty": "repetition_penalty"}, "vllm",
                   grammar=frozenset({"json_schema"}), raw_schema="response_format"),
    "me": Engine("llama-cpp-python server", {"top_k": "top_k", "min_p": "min_p", "repeat_penalty": "repeat_penalty"},
                 "llama-cpp-python", parallel=1),  # a new request interrupts the running one (interrupt_requests)
}
GENERIC = Engine("OpenAI-compatible server")


class RemoteBackend:
    name = "remote"

    def __init__(self, url: str, model_id: str | None, key: ApiKey, *, reason: str = "the model is a URL"):
        self.server = Server(url, key)
        self._decoders: list[RemoteDecoder] = []
        self.url = url
        listing = self.server.call(lambda: self.server.client.models.list(), listing=True)
        models = getattr(listing, "data", None)
        if not isinstance(models, list) or not all(isinstance(getattr(m, "id", None), str) for m in models):
            raise not_openai(url)
        self.model_ids = [m.id for m in models]
        self.model_id = _pick_model(url, model_id, self.model_ids)
        card = next(m for m in models if m.id == self.model_id)
        self.engine = ENGINES.get(getattr(card, "owned_by", None), GENERIC)
        self.n_ctx = _server_ctx(card) or UNKNOWN_CTX
        self.capabilities = Capabilities(token_ids=False, tokenize="server" if self.engine.tokenize else "none",
                                         count_chat=self.engine.tokenize in ("llama.cpp", "vllm"), prefill=False,
                                         logprobs=False, sampling=self.engine.sampling, grammar=self.engine.grammar,
                                         parallel=self.engine.parallel, samples_together=self.engine.parallel > 1)
        self.info = BackendInfo("remote", f"{self.engine.name} at {url}", "(server)",
                                f"{reason}; model id {self.model_id!r}")
        # openai imports each API's module on first use: do it here, not inside the first reply's TTFT.
        _ = self.server.client.chat.completions, self.server.client.completions

    # --- prompts ------------------------------------------------------------------------------
    @property
    def has_chat_template(self) -> bool:
        return True  # the server applies its own; one that has none says so when asked

    def encode(self, *, messages: Sequence[Message] | None = None, text: str | None = None,
               reasoning: str | None = None) -> Prompt:
        """No tokenization here: the server receives the messages (or the raw text) itself."""
        _refuse_reasoning(reasoning)
        if messages is not None:
            return Prompt((), tuple(messages), None)
        if text is None:
            raise UsageError("empty prompt")
        return Prompt((), (), text)

    def chat_prompt(self, messages: Sequence[Message], *, add_generation_prompt: bool = True,
                    reasoning: str | None = None) -> str:
        _refuse_reasoning(reasoning)
        if self.engine.tokenize != "llama.cpp":
            raise self._cannot("render its chat template for llmcli")
        body = {"messages": [m.to_dict() for m in messages], "add_generation_prompt": add_generation_prompt}
        out = self.server.post("/apply-template", body)
        if not isinstance(out, dict) or not isinstance(out.get("prompt"), str):
            raise not_openai(self.url)
        return out["prompt"]

    def chat_ids(self, messages: Sequence[Message], *, add_generation_prompt: bool = True,
                 reasoning: str | None = None) -> list[int]:
        """The conversation's ids as the server's template and tokenizer make them (chat uses the
        count to fit its window)."""
        _refuse_reasoning(reasoning)
        if self.engine.tokenize == "vllm":
            body = {"model": self.model_id, "messages": [m.to_dict() for m in messages],
                    "add_generation_prompt": add_generation_prompt}
            return _ids(self.server.post("/tokenize", body), self.url)
        return self.tokenize(self.chat_prompt(messages, add_generation_prompt=add_generation_prompt))

    # --- tokenizer through the server ---------------------------------------------------------
    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]:
        dialect = self.engine.tokenize
        if dialect == "llama.cpp":
            body = {"content": text, "add_special": add_special, "parse_special": parse_special}
            return _ids(self.server.post("/tokenize", body), self.url)
        if dialect == "vllm":
            if parse_special != add_special:
                raise UsageError("vLLM's /tokenize parses special-token text exactly when it adds BOS/EOS")
            body = {"model": self.model_id, "prompt": text, "add_special_tokens": add_special}
            return _ids(self.server.post("/tokenize", body), self.url)
        if dialect == "llama-cpp-python":
            if not (add_special and parse_special):
                raise UsageError("llama-cpp-python's server always adds BOS and parses special-token text",
                                 "drop --no-special for this server")
            return _ids(self.server.post("/extras/tokenize", {"input": text, "model": self.model_id}), self.url)
        raise self._cannot("tokenize")

    def detokenize(self, ids: Sequence[int]) -> str:
        ids = [int(i) for i in ids]
        dialect = self.engine.tokenize
        if dialect == "llama.cpp":
            out, key = self.server.post("/detokenize", {"tokens": ids}), "content"
        elif dialect == "vllm":
            out, key = self.server.post("/detokenize", {"model": self.model_id, "tokens": ids}), "prompt"
        elif dialect == "llama-cpp-python":
            out, key = self.server.post("/extras/detokenize", {"tokens": ids, "model": self.model_id}), "text"
        else:
            raise self._cannot("detokenize")
        if not isinstance(out, dict) or not isinstance(out.get(key), str):
            raise not_openai(self.url)
        return out[key]

    def token_pieces(self, ids: Sequence[int]) -> list[str]:
        return [self.detokenize([i]) for i in ids]

    def _cannot(self, what: str) -> BackendError:
        return BackendError(f"this server ({self.engine.name} at {self.url}) cannot {what}",
                            "tokenize needs llama.cpp's llama-server, vLLM or llama-cpp-python's server, "
                            "or the model file itself")

    # --- generation ---------------------------------------------------------------------------
    def stream(self, prompt: Prompt | Sequence[int], params: SamplingParams, *,
               handle: Handle | None = None) -> Iterator[StreamEvent]:
        """``handle``: receives the open HTTP stream, so another thread can cancel the request."""
        if not isinstance(prompt, Prompt):
            raise UsageError("a server takes the prompt as messages or text, not token ids")
        if not prompt.messages and not prompt.text:
            raise ModelError("the prompt is empty")
        stats = open_stream(self, None, params)
        self.compiled(params.constraint)
        # The server counts tokens and applies max_tokens itself: a chunk may hold several tokens.
        return drive(self._chunks(prompt, params, stats, handle), params=params.replace(max_tokens=None), stats=stats)

    def request(self, prompt: Prompt, params: SamplingParams, seed: int) -> dict:
        """The keyword arguments of the openai call (also used by the benchmark's reference)."""
        body = dict(self.engine.fixed)
        for name, key in self.engine.extra.items():
            value = getattr(params, name)
            body[key] = -1 if (name == "top_k" and value == 0 and self.engine.tokenize == "vllm") else value
        kwargs = {"model": self.model_id, "stream": True, "temperature": params.temperature, "top_p": params.top_p,
                  "seed": seed, "extra_body": body}
        if params.max_tokens is not None:
            kwargs["max_tokens"] = params.max_tokens
        if params.stop:
            kwargs["stop"] = list(params.stop)
        if self.engine is not ENGINES["me"]:  # llama-cpp-python's server rejects stream_options
            kwargs["stream_options"] = {"include_usage": True}
        if prompt.messages:
            kwargs["messages"] = [m.to_dict() for m in prompt.messages]
        else:
            kwargs["prompt"] = prompt.text
        if params.constraint is not None:
            self._constrain(kwargs, params.constraint, chat=bool(prompt.messages))
        return kwargs

    def _constrain(self, kwargs: dict, c: Constraint, *, chat: bool) -> None:
        body = kwargs["extra_body"]
        if c.kind == "gbnf":
            body["grammar"] = c.text  # llama-server, both endpoints
            return
        fmt = {"type": "json_schema", "json_schema": {"name": "llmcli", "schema": c.schema(), "strict": True}}
        if chat:
            kwargs["response_format"] = fmt
        else:
            body[self.engine.raw_schema] = fmt if self.engine.raw_schema == "response_format" else c.schema()

    def compiled(self, constraint: Constraint | None) -> Constraint | None:
        """Check a constraint once (cached): what llmcli knows the engine would not enforce is refused
        here, then one tiny request carrying it lets the server refuse what it cannot parse — before
        any generation, so a batch fails once instead of once per line."""
        if constraint is None:
            return None
        cache = self.__dict__.setdefault("_compiled", {})
        if constraint not in cache:
            check_constraint(self.name, self.capabilities, constraint)
            if constraint.kind == "json_schema" and self.engine is ENGINES["llamacpp"]:
                # llama-server's converter, like the one the llama.cpp backend uses, skips keywords it
                # does not implement: the same check refuses them first.
                from llmcli.backends.grammar_gbnf import check_schema

                check_schema(constraint.schema(), who=f"the {self.engine.name} at {self.url}")
            self._probe(constraint)
            cache[constraint] = constraint
        return cache[constraint]

    def _probe(self, c: Constraint) -> None:
        # A raw completion: every OpenAI-compatible engine has the endpoint, with or without a chat
        # template, and parses a grammar or schema there as it does for chat.
        kwargs = self.request(Prompt((), (), "Hi"), SamplingParams(max_tokens=1, constraint=c), 0)
        kwargs.update(stream=False)
        kwargs.pop("stream_options", None)
        try:
            self.server.call(lambda: self.server.client.completions.create(**kwargs), model_ids=self.model_ids)
        except UsageError as e:  # the server refused it (HTTP 400); a server that is down says so as usual
            detail = e.message.partition("rejected the request: ")[2] or e.message
            raise UsageError(f"the {self.engine.name} at {self.url} cannot use {c.flag} {c.source}: {detail}",
                             "fix the grammar (llama.cpp's GBNF)" if c.kind == "gbnf" else
                             "simplify the schema (docs/usage.md, structured output)") from None

    def _chunks(self, prompt: Prompt, params: SamplingParams, stats: GenerationStats,
                handle: Handle | None) -> Iterator[TextChunk]:
        kwargs = self.request(prompt, params, stats.seed)
        api = self.server.client.chat.completions if prompt.messages else self.server.client.completions
        stream = self.server.call(lambda: api.create(**kwargs), model_ids=self.model_ids)
        if handle is not None:
            handle.opened(stream)
        chat = bool(prompt.messages)
        finish, usage, timings, sent, thinking = None, None, None, 0, False
        try:
            iterator = iter(stream)
            while True:
                try:
                    chunk = next(iterator)
                except StopIteration:
                    break
                except Exception as e:  # noqa: BLE001 - translated; anything else is re-raised as is
                    raise _mid_reply(self.server.translate(e), self.url) from e
                usage = getattr(chunk, "usage", None) or usage
                timings = (chunk.model_extra or {}).get("timings") or timings
                for choice in chunk.choices or ():
                    if chat:
                        delta = choice.delta
                        extra = (delta.model_extra or {}) if delta is not None else {}
                        reasoning = extra.get("reasoning_content") or extra.get("reasoning")
                        text = delta.content if delta is not None else None
                    else:
                        reasoning, text = None, choice.text
                    # Reasoning the server parsed out goes back into <think> tags, which the
                    # answer/thinking split of every backend understands.
                    if reasoning:
                        if not thinking:
                            thinking = True
                            yield TextChunk("<think>", 0)
                        sent += 1
                        yield TextChunk(reasoning, 1)
                    if text:
                        if thinking:
                            thinking = False
                            yield TextChunk("</think>", 0)
                        sent += 1
                        yield TextChunk(text, 1)
                    finish = choice.finish_reason or finish
            if finish is None:
                if not sent:  # llama-cpp-python's server does this when the prompt exceeds its window
                    raise StreamError(f"the server at {self.url} ended the stream without a reply",
                                      "see the server's log; a prompt longer than its context window does this")
                raise StreamError(f"the stream from {self.url} ended without a finish reason",
                                  "the server may have stopped; see its log")
            extra_tokens = 0
            if usage is not None:
                stats.prompt_tokens = usage.prompt_tokens or 0
                extra_tokens = max((usage.completion_tokens or 0) - sent, 0)
            if isinstance(timings, dict) and isinstance(timings.get("prompt_n"), int):
                stats.prompt_tokens_processed = timings["prompt_n"]  # llama.cpp: the part not reused
            else:
                stats.prompt_tokens_processed = stats.prompt_tokens
            yield TextChunk("", extra_tokens, finish_reason="length" if finish == "length" else "stop")
        finally:
            stream.close()  # also on Ctrl-C: the server stops generating for us

    def decoder(self, n: int) -> RemoteDecoder:
        """``n`` requests in flight at once (``--parallel``, ``--n``); the server batches them."""
        decoder = RemoteDecoder(self, n)
        self._decoders.append(decoder)
        return decoder

    # --- what a server does not have ----------------------------------------------------------
    def prefill(self, ids: Sequence[int]) -> int:
        raise BackendError("a server has no prefill; it reuses prompt prefixes itself")

    def logprobs(self, ids: list[int]) -> list[float]:
        raise BackendError(f"the remote backend cannot score text ({self.url})",
                           "run perplexity on the model file itself")

    def reset(self) -> None:
        pass

    def close(self) -> None:
        for decoder in self._decoders:  # requests still in flight (Ctrl-C during --n): the server stops them
            decoder.close()
        try:
            self.server.client.close()
        except Exception:  # noqa: BLE001 - closing an idle HTTP pool must never fail a run
            pass


def _pick_model(url: str, wanted: str | None, ids: list[str]) -> str:
    if not ids:
        raise ModelError(f"the server at {url} lists no models", "check the server's log")
    listed = ", ".join(ids)
    if wanted is None:
        if len(ids) == 1:
            return ids[0]
        raise UsageError(f"the server at {url} serves several models: {listed}",
                         f"choose one with -m '{url}#MODEL_ID'")
    if wanted not in ids:
        raise ModelError(f"the server at {url} has no model {wanted!r}; it serves: {listed}",
                         f"use -m '{url}#MODEL_ID' with one of those ids")
    return wanted


def _server_ctx(card) -> int | None:
    extra = card.model_extra or {}
    for value in (extra.get("max_model_len"), (extra.get("meta") or {}).get("n_ctx")):
        if isinstance(value, int) and value > 0:
            return value
    return None


def _ids(out, url: str) -> list[int]:
    tokens = out.get("tokens") if isinstance(out, dict) else None
    if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
        raise not_openai(url)
    return tokens


def _mid_reply(err: BaseException, url: str) -> BaseException:
    """Any failure after the stream started breaks the reply: the text so far stays valid."""
    if isinstance(err, StreamError) or not isinstance(err, BackendError):
        return err
    return StreamError(err.message, err.hint)


def load(ref, api_key_flag: str | None, environ, *, reason: str) -> RemoteBackend:
    from llmcli.backends.remote_http import api_key

    return RemoteBackend(ref.url, ref.model_id, api_key(api_key_flag, environ), reason=reason)


def _refuse_reasoning(reasoning: str | None) -> None:
    if reasoning is not None:
        # The server renders its own template; its switches are engine-specific and untested here.
        raise UsageError(f"--reasoning {reasoning}: the remote backend cannot pass it to the server's template",
                         "drop --reasoning (servers such as vLLM take chat_template_kwargs themselves)")
