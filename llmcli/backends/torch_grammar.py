"""Structured output on the torch backend through llguidance (docs/usage.md says why llguidance).

llguidance compiles a JSON schema (or a GBNF grammar, converted to its Lark dialect) against
the model's tokenizer once; for each generated token it computes the set of allowed token ids
as a bitmask (tens of microseconds), which ``TokenPicker`` applies to the logits before any
other sampling step. JSON is compact (no optional whitespace), so a small model cannot wander
off into blank lines before the next key.
"""

from __future__ import annotations

from collections.abc import Iterable

from llmcli.backends.base import Constraint
from llmcli.errors import BackendError, UsageError


def tokenizer(hf_tokenizer, n_vocab: int, ends: Iterable[int]):
    """llguidance's view of the tokenizer (≈1 s to build: cache it); ``ends`` are the ids that end a
    generation, which the grammar allows once the text is complete."""
    from llguidance.hf import from_tokenizer

    try:
        return from_tokenizer(hf_tokenizer, n_vocab=n_vocab, eos_token=sorted(ends))
    except ValueError as e:
        raise UsageError(f"structured output needs a fast (Rust) tokenizer: {e}",
                         "use a model folder with tokenizer.json") from None


def compile_grammar(constraint: Constraint, lltok) -> str:
    """llguidance's grammar for ``constraint``, validated against the tokenizer; a UsageError naming
    what it cannot enforce (llguidance refuses JSON-schema keywords it does not implement)."""
    import llguidance

    try:
        if constraint.kind == "json_schema":
            grammar = llguidance.LLMatcher.grammar_from_json_schema(
                constraint.text, defaults={"whitespace_flexible": False})
        else:
            grammar = llguidance.grammar_from("gbnf", constraint.text)
    except (ValueError, RuntimeError) as e:
        raise UsageError(f"the torch backend cannot use {constraint.flag}: {_first_line(e)}",
                         "check the grammar against docs/usage.md (structured output)") from None
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, lltok)
    if is_error:
        raise UsageError(f"the torch backend cannot enforce {constraint.flag}: {_first_line(messages[0])}",
                         "remove or change that part of the schema or grammar")
    return grammar


def _first_line(e) -> str:
    return " ".join(str(e).split())[:300]


class TokenMask:
    """One stream's grammar state: which ids may come next, and the ids generated so far."""

    def __init__(self, lltok, grammar: str, n_vocab: int):
        import llguidance

        self._matcher = llguidance.LLMatcher(lltok, grammar, log_level=0)
        self._n_vocab = n_vocab

    def allowed(self, device):
        """A bool tensor over the vocabulary: True where the grammar permits the id."""
        import numpy as np
        import torch

        bits = np.frombuffer(self._matcher.compute_bitmask(), dtype=np.uint8)
        mask = np.unpackbits(bits, bitorder="little")[: self._n_vocab].astype(bool)
        self._check()
        return torch.from_numpy(mask).to(device)

    def consume(self, token: int) -> None:
        self._matcher.consume_token(token)
        self._check()

    def _check(self) -> None:
        if self._matcher.is_error():
            raise BackendError(f"llguidance stopped: {_first_line(self._matcher.get_error())}")
