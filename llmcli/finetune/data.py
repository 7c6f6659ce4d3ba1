"""Training data: reading, checking and tokenizing it into fixed examples.

Two formats, told apart by the file: JSONL (a ``.jsonl`` name, or a first non-blank character
``{``) holds one ``{"messages": [{"role": …, "content": …}, …]}`` record a line and trains on
the assistant turns only; anything else is plain text, tokenized as one stream and packed into
blocks of ``seq_len`` tokens (a trailing partial block is dropped from training data).

Data is checked before a model is loaded where it can be (UTF-8, emptiness, JSONL shape), so a
typo costs no model load. Non-UTF-8 data is refused rather than repaired: training on U+FFFD
replacement characters would teach the model the damage.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

from llmcli.backends.core import common_prefix_len
from llmcli.errors import UsageError

ROLES = ("system", "user", "assistant")
MAX_DATA_BYTES = 256 * 1024 * 1024
IGNORE = -100  # the label torch's cross-entropy skips


@dataclass(frozen=True)
class Source:
    """A data file read and checked: its text (or records), format and content hash."""

    path: str
    kind: str  # "text" | "chat"
    text: str
    records: tuple[tuple[tuple[str, str], ...], ...]  # chat: per record, (role, content) pairs
    sha256: str


@dataclass(frozen=True)
class Example:
    ids: tuple[int, ...]
    labels: tuple[int, ...]  # IGNORE where no loss is taken

    @property
    def trained(self) -> int:
        """Tokens that contribute to the loss (predicted positions: all but the first)."""
        return sum(1 for x in self.labels[1:] if x != IGNORE)


def read_source(file: str, what: str = "training data") -> Source:
    path = Path(file).expanduser()
    try:
        if path.is_dir():
            raise UsageError(f"{what} {file} is a directory, not a file")
        if path.stat().st_size > MAX_DATA_BYTES:
            raise UsageError(f"{what} {file} is larger than {MAX_DATA_BYTES // 2**20} MiB",
                             "train on a part of it")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{what} file not found: {file}") from None
    except OSError as e:
        raise UsageError(f"cannot read {what} {file}: {e.strerror}") from None
    digest = hashlib.sha256(raw).hexdigest()
    if b"\x00" in raw:
        raise UsageError(f"{what} {file} is binary data (it contains NUL bytes)", "train on UTF-8 text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"{what} {file} is not UTF-8 text (invalid byte at offset {e.start})",
                         "convert it first, e.g. iconv -f latin1 -t utf-8") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text.strip():
        raise UsageError(f"{what} {file} is empty or only whitespace", "give a file with text to learn from")
    if path.suffix.lower() == ".jsonl" or text.lstrip().startswith("{"):
        return Source(file, "chat", "", parse_records(text, file), digest)
    return Source(file, "text", text, (), digest)


def parse_records(text: str, file: str) -> tuple[tuple[tuple[str, str], ...], ...]:
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{file} line {n}"
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError) as e:
            raise UsageError(f"{where} is not valid JSON ({e})",
                             'each line must be {"messages": [{"role": "user", "content": "…"}, …]}') from None
        msgs = obj.get("messages") if isinstance(obj, dict) else None
        if not isinstance(msgs, list) or not msgs:
            raise UsageError(f"{where} is not a record with a non-empty \"messages\" list",
                             'each line must be {"messages": [{"role": "user", "content": "…"}, …]}')
        turns = []
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or not isinstance(m.get("content"), str):
                raise UsageError(f"{where}: message {i + 1} is not an object with a string \"content\"")
            role = m.get("role")
            if role not in ROLES:
                raise UsageError(f"{where}: message {i + 1} has an unknown role {role!r}",
                                 "roles are " + ", ".join(ROLES))
            turns.append((role, m["content"]))
        if not any(r == "assistant" for r, _ in turns):
            raise UsageError(f"{where} has no assistant message, so nothing to learn",
                             "add the answer the model should give as an assistant message")
        out.append(tuple(turns))
    return tuple(out)


def text_blocks(ids: list[int], seq_len: int, *, keep_tail: bool = False) -> list[Example]:
    """Pack a token stream into blocks of seq_len; the partial tail only when ``keep_tail``."""
    blocks = [ids[i:i + seq_len] for i in range(0, len(ids), seq_len)]
    if blocks and len(blocks[-1]) < seq_len and not (keep_tail and len(blocks[-1]) >= 2):
        blocks.pop()
    return [Example(tuple(b), tuple(b)) for b in blocks]


def chat_example(backend, turns, seq_len: int) -> tuple[Example, bool]:
    """One conversation as ids, the loss on the assistant turns' tokens only; (example, truncated).

    Each assistant turn's tokens are found by rendering the conversation up to it twice (with the
    generation prompt, and with the turn) with the model's own chat template."""
    from llmcli.backends.base import Message

    msgs = [Message(r, c) for r, c in turns]
    ids = backend.chat_ids(msgs, add_generation_prompt=False)
    labels = [IGNORE] * len(ids)
    for i, m in enumerate(msgs):
        if m.role != "assistant":
            continue
        start = common_prefix_len(backend.chat_ids(msgs[:i], add_generation_prompt=True), ids)
        end = common_prefix_len(backend.chat_ids(msgs[:i + 1], add_generation_prompt=False), ids)
        labels[start:end] = ids[start:end]
    truncated = len(ids) > seq_len
    return Example(tuple(ids[:seq_len]), tuple(labels[:seq_len])), truncated


def examples(backend, src: Source, seq_len: int, *, keep_tail: bool = False) -> tuple[list[Example], int]:
    """(examples, how many chat records were cut to seq_len)."""
    if src.kind == "text":
        ids = backend.tokenize(src.text, add_special=True, parse_special=False)
        if len(ids) < seq_len and not keep_tail:
            raise UsageError(f"{src.path} is shorter than one training sequence ({len(ids)} tokens < --seq-len "
                             f"{seq_len})", "give more text, or a smaller --seq-len")
        return text_blocks(ids, seq_len, keep_tail=keep_tail), 0
    if not backend.has_chat_template:
        raise UsageError(f"{src.path} holds chat records, but the model has no chat template",
                         "train a chat model, or give plain text")
    out, cut = [], 0
    for turns in src.records:
        ex, truncated = chat_example(backend, turns, seq_len)
        cut += truncated
        if ex.trained:
            out.append(ex)
    if not out:
        raise UsageError(f"{src.path}: no assistant tokens fit in --seq-len {seq_len}", "raise --seq-len")
    return out, cut


def split(train: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Hold out ``fraction`` of the examples (at least one), chosen by ``seed``."""
    if fraction <= 0:
        return train, []
    n_val = max(1, round(len(train) * fraction))
    if n_val >= len(train):
        raise UsageError(f"--val-split {fraction:g} leaves no training data ({len(train)} example(s) in all)",
                         "give more data or a smaller --val-split")
    order = list(range(len(train)))
    random.Random(seed).shuffle(order)
    held = set(order[:n_val])
    return [e for i, e in enumerate(train) if i not in held], [e for i, e in enumerate(train) if i in held]
