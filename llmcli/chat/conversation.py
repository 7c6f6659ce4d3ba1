"""Conversation state, free of any model or terminal: the system prompt, the messages,
the sampling parameters, undo/retry bookkeeping and the versioned JSON form.

The messages alternate user, assistant, user, assistant, …; while a reply is being
generated (or when a process died before it finished) the last message is a user
message with no reply yet: the *pending* message.
"""

from __future__ import annotations

import datetime
import json
import random
from dataclasses import dataclass, field

from llmcli.backends.base import Message, SamplingParams
from llmcli.errors import UsageError
from llmcli.params import PARAMS, SEED_MAX, SESSION_KEYS, SETTABLE

FORMAT = "llmcli-chat"
FORMAT_VERSION = 1
# The r-th /retry of a turn uses seed + turn + r × RETRY_SEED_STRIDE, so that a retry gives a new
# sample while a fresh process replaying the same commands still gets the same one.
RETRY_SEED_STRIDE = 1_000_003
SEED_MODULUS = SEED_MAX + 1  # SamplingParams accepts seeds in [0, SEED_MAX]
ROLES = ("user", "assistant")  # the system prompt is the conversation's own field


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).astimezone().isoformat(timespec="seconds")


@dataclass
class ChatMessage:
    role: str  # "user" | "assistant"
    content: str
    thinking: str = ""  # assistant only: a reasoning model's thinking, never shown to the model as text
    interrupted: bool = False  # assistant only: the reply was cut short with Ctrl-C
    seed: int | None = None  # assistant only: the seed that produced it
    attempt: int = 0  # assistant only: 0 for the first reply, r after the r-th /retry

    def to_dict(self) -> dict:
        d: dict = {"role": self.role, "content": self.content}
        if self.role == "assistant":
            if self.thinking:
                d["thinking"] = self.thinking
            if self.interrupted:
                d["interrupted"] = True
            if self.seed is not None:
                d["seed"] = self.seed
            if self.attempt:
                d["attempt"] = self.attempt
        return d

    @classmethod
    def from_dict(cls, d) -> ChatMessage:
        if not isinstance(d, dict):
            raise ValueError("a message is not an object")
        role, content = d.get("role"), d.get("content")
        if role not in ROLES:
            raise ValueError(f"unknown message role {_short(role)}")
        if not isinstance(content, str):
            raise ValueError("a message has no text content")
        thinking, interrupted = d.get("thinking", ""), d.get("interrupted", False)
        seed, attempt = d.get("seed"), d.get("attempt", 0)
        if not isinstance(thinking, str):
            raise ValueError("a message's \"thinking\" is not a string")
        if not isinstance(interrupted, bool):
            raise ValueError("a message's \"interrupted\" is not true or false")
        if seed is not None and not _is_int(seed, 0, SEED_MAX):
            raise ValueError(f"a message's \"seed\" is not an integer in 0..{SEED_MAX}")
        if not _is_int(attempt, 0, None):
            raise ValueError("a message's \"attempt\" is not a non-negative integer")
        return cls(role, content, thinking=thinking, interrupted=interrupted, seed=seed, attempt=attempt)

    def to_message(self) -> Message:
        return Message(self.role, self.content, reasoning=self.thinking if self.role == "assistant" else "")


@dataclass
class Conversation:
    params: SamplingParams = field(default_factory=SamplingParams)
    system: str | None = None
    messages: list[ChatMessage] = field(default_factory=list)
    model: str | None = None  # what the user called the model (store name or path)
    model_path: str | None = None  # the file or folder it resolved to
    # Exchanges (user message + reply) at the start that no longer fit the context window: they stay
    # in the file and the transcript but are not sent to the model. Only ever grows (until /clear),
    # so turns after a drop keep reusing the cached prefix; a fresh process loading the file sends
    # exactly the same prompt.
    context_start: int = 0
    next_attempt: int = 0  # attempt number of the reply to the pending message
    created: str = field(default_factory=_now)
    updated: str = field(default_factory=_now)

    def __post_init__(self) -> None:
        if self.params.seed is None:
            # A concrete base seed, saved with the conversation, makes every reply reproducible.
            self.params = self.params.replace(seed=random.randrange(2**31))
        if self.params.n != 1:
            self.params = self.params.replace(n=1)

    # --- structure -----------------------------------------------------------------------------
    @property
    def pending(self) -> bool:
        """The last message is a user message still waiting for its reply."""
        return bool(self.messages) and self.messages[-1].role == "user"

    @property
    def exchanges(self) -> int:
        """Complete exchanges (user message + reply)."""
        return sum(1 for m in self.messages if m.role == "assistant")

    @property
    def turn(self) -> int:
        """0-based index of the user message being (or last) answered."""
        return max(sum(1 for m in self.messages if m.role == "user") - 1, 0)

    def reply_seed(self) -> int:
        """Seed of the reply to the pending message: seed + turn (+ RETRY_SEED_STRIDE per /retry)."""
        return (self.params.seed + self.turn + self.next_attempt * RETRY_SEED_STRIDE) % SEED_MODULUS

    def _touch(self) -> None:
        self.updated = _now()

    # --- edits ---------------------------------------------------------------------------------
    def add_user(self, text: str) -> None:
        if self.pending:
            raise UsageError("the last message has no reply yet", "use /retry to generate it or /undo to drop it")
        self.messages.append(ChatMessage("user", text))
        self.next_attempt = 0
        self._touch()

    def add_reply(self, text: str, *, thinking: str = "", interrupted: bool = False, seed: int | None = None) -> None:
        if not self.pending:
            raise ValueError("a reply needs a pending user message")
        self.messages.append(ChatMessage("assistant", text, thinking=thinking, interrupted=interrupted, seed=seed,
                                         attempt=self.next_attempt))
        self.next_attempt = 0
        self._touch()

    def drop_pending(self) -> None:
        """Forget a user message whose reply could not be generated (error before any token)."""
        if self.pending:
            self.messages.pop()
            self.next_attempt = 0
            self._clamp()
            self._touch()

    def undo(self) -> bool:
        """Drop the last exchange (or a pending message). False when there is nothing to drop."""
        if not self.messages:
            return False
        if self.pending:
            self.messages.pop()
        else:
            del self.messages[-2:]
        self.next_attempt = 0
        self._clamp()
        self._touch()
        return True

    def retry(self) -> str:
        """Remove the last reply so it can be generated again; returns the user message it answered."""
        if not self.messages:
            raise UsageError("nothing to retry yet", "send a message first")
        if self.pending:  # e.g. the process died before the reply: generate it now
            return self.messages[-1].content
        last = self.messages.pop()
        self.next_attempt = last.attempt + 1
        self._touch()
        return self.messages[-1].content

    def set_system(self, text: str | None) -> None:
        self.system = text or None
        self._touch()

    def clear(self) -> None:
        """A new conversation: same model, system prompt and parameters; a new creation time."""
        self.messages = []
        self.context_start = 0
        self.next_attempt = 0
        self.created = self.updated = _now()

    def _clamp(self) -> None:
        self.context_start = min(self.context_start, self.exchanges)

    # --- parameters ----------------------------------------------------------------------------
    def set_param(self, name: str, text: str) -> None:
        """``/set NAME VALUE``: VALUE parsed and range-checked by the parameter table."""
        name = name.strip().lower().replace("-", "_")
        if name == "n":
            raise UsageError("chat generates one reply per turn: n cannot be set", "use /retry for another reply")
        if name not in SETTABLE:
            raise UsageError(f"unknown parameter {_short(name)}", f"one of: {', '.join(SETTABLE)}")
        value = PARAMS[name].parse(text, name)
        if name == "seed" and value is None:
            value = random.randrange(2**31)
        self.params = self.params.replace(**{name: value})
        self._touch()

    def param_lines(self) -> list[str]:
        out = []
        for name in SETTABLE:
            v = getattr(self.params, name)
            if name == "stop":
                shown = json.dumps(list(v), ensure_ascii=False) if v else "none"
            elif v is None:
                shown = f"none ({PARAMS[name].default_shown})"
            else:
                shown = str(v)
            out.append(f"{name} = {shown}")
        return out

    # --- what the model sees -------------------------------------------------------------------
    def model_messages(self, start: int | None = None) -> list[Message]:
        """The system prompt plus the messages from exchange ``start`` on (default: context_start)."""
        start = self.context_start if start is None else start
        out = [Message("system", self.system)] if self.system else []
        out += [m.to_message() for m in self.messages[2 * start:]]
        return out

    # --- JSON ----------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "created": self.created,
            "updated": self.updated,
            "model": self.model,
            "model_path": self.model_path,
            "system": self.system,
            "params": self.params.to_dict(),
            "context_start": self.context_start,
            "next_attempt": self.next_attempt,
            "messages": [m.to_dict() for m in self.messages],
        }

    @classmethod
    def from_dict(cls, d) -> Conversation:
        """Raises ValueError (with a reason a user can act on) for anything malformed."""
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ValueError("not an llmcli conversation (no \"format\": \"llmcli-chat\")")
        version = d.get("version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise ValueError("no format version")
        if version > FORMAT_VERSION:
            raise ValueError(f"format version {version} is newer than this llmcli understands ({FORMAT_VERSION}): "
                             "upgrade llmcli")
        if version < 1:
            raise ValueError(f"unknown format version {version}")
        params = _params_from_dict(d.get("params", {}))
        raw_messages = d.get("messages", [])
        if not isinstance(raw_messages, list):
            raise ValueError("\"messages\" is not a list")
        messages = [ChatMessage.from_dict(m) for m in raw_messages]
        for i, m in enumerate(messages):
            if m.role != ("user" if i % 2 == 0 else "assistant"):
                raise ValueError(f"message {i + 1} should be a {'user' if i % 2 == 0 else 'assistant'} message")
        system = d.get("system")
        if system is not None and not isinstance(system, str):
            raise ValueError("\"system\" is not a string")
        for key in ("model", "model_path", "created", "updated"):
            if d.get(key) is not None and not isinstance(d.get(key), str):
                raise ValueError(f"\"{key}\" is not a string")
        start, attempt = d.get("context_start", 0), d.get("next_attempt", 0)
        if not _is_int(start, 0, None) or not _is_int(attempt, 0, None):
            raise ValueError("\"context_start\"/\"next_attempt\" must be non-negative integers")
        conv = cls(params=params, system=system, messages=messages, model=d.get("model"),
                   model_path=d.get("model_path"), context_start=start, next_attempt=attempt,
                   created=d.get("created") or _now(), updated=d.get("updated") or _now())
        conv._clamp()
        return conv

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Conversation:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"invalid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
        except RecursionError:
            raise ValueError("invalid JSON (nested too deeply)") from None
        except ValueError as e:  # e.g. an integer of more than 4300 digits
            raise ValueError(f"invalid JSON ({e})") from None
        return cls.from_dict(data)

    # --- transcript ----------------------------------------------------------------------------
    def to_markdown(self) -> str:
        lines = ["# Chat transcript", ""]
        if self.model:
            lines.append(f"- model: `{self.model}`")
        lines.append(f"- started: {self.created}")
        lines.append(f"- updated: {self.updated}")
        p = self.params
        lines.append(f"- sampling: temperature {p.temperature}, top-k {p.top_k}, top-p {p.top_p}, min-p {p.min_p}, "
                     f"seed {p.seed}")
        if self.context_start:
            lines.append(f"- the first {self.context_start} exchange(s) no longer fit the context window and were "
                         "not sent to the model in later turns")
        lines.append("")
        if self.system:
            lines += ["## System", "", self.system, ""]
        for m in self.messages:
            if m.role == "user":
                lines += ["## You", "", m.content, ""]
            else:
                lines += ["## Assistant", ""]
                if m.thinking:
                    lines += ["<details><summary>thinking</summary>", "", m.thinking.strip(), "", "</details>", ""]
                lines += [m.content, ""]
                if m.interrupted:
                    lines += ["*(interrupted)*", ""]
        if self.pending:
            lines += ["*(no reply)*", ""]
        return "\n".join(lines).rstrip("\n") + "\n"


def _is_int(value, lo: int, hi: int | None) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= lo and (hi is None or value <= hi)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "…"


def _params_from_dict(raw) -> SamplingParams:
    """A saved "params" object: each known key checked by the parameter table, strictly typed (a
    1.5 is never an integer, "abc" never a stop list, true never a number); unknown keys, which a
    newer llmcli may write, are ignored."""
    if not isinstance(raw, dict):
        raise ValueError("\"params\" is not an object")
    values = {}
    for key in SESSION_KEYS:
        if key in raw:
            try:
                values[key] = PARAMS[key].check(raw[key], f"\"{key}\"")
            except UsageError as e:
                raise ValueError(f"params: {e.message}") from None
    values["n"] = 1  # chat generates one reply per turn, whatever the file says
    try:
        return SamplingParams(**values)
    except UsageError as e:
        raise ValueError(f"params: {e.message}") from None
