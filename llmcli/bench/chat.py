"""Chat benchmark: time to first token as a conversation grows, with the prefix cache reused
(what ``llmcli chat`` does) against the same conversation with the cache dropped before every
turn (``backend.reset()``: every turn re-evaluates the whole history), interleaved.

Each turn adds a ~170-token user message and a reply of at most 32 tokens (greedy), so the
history grows by ~200 tokens a turn. TTFT is wall time from handing the message to the chat
session (template rendering, context fitting and tokenization included) to the first text.
After each reply the chat session evaluates the reply into the cache (``prefill``), as the REPL
does in the background while the user types; that is not timed, as it is not waited for.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from llmcli.bench.table import Row

TURNS = 10
MEASURED = (1, 5, 10)
REPLY_TOKENS = 32
CTX = 4096

_TOPICS = ["lighthouses", "bread", "glaciers", "violins", "bees", "railways", "volcanoes", "chess", "coffee",
           "comets", "tides", "paper"]
_BODY = ("I have been reading about {t} all week and I keep finding details that surprise me. The older sources "
         "describe {t} in a way that feels almost poetic, while the modern ones are full of measurements, tables "
         "and careful comparisons between regions and centuries. Some authors argue that everything important "
         "about {t} was understood long ago; others insist that the most interesting questions are still open. "
         "I would like a short, clear summary that a curious teenager could follow, with one concrete example "
         "and one common misconception. Please keep it brief, because I will ask about other topics next, and "
         "tell me which single book or museum you would recommend to learn more about {t}.")


def _log(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def user_message(turn: int) -> str:
    return f"Question {turn}. " + _BODY.format(t=_TOPICS[turn % len(_TOPICS)])


class _FirstTextSink:
    def __init__(self):
        self.first: float | None = None

    def _mark(self, text: str) -> None:
        if text and self.first is None:
            self.first = time.perf_counter()

    answer = thinking = _mark

    def end(self) -> None:
        pass


def conversation(backend, *, reuse: bool) -> list[tuple[float, int, int]]:
    """One greedy conversation of TURNS turns: per turn (TTFT s, prompt tokens, tokens evaluated)."""
    from llmcli.backends.base import SamplingParams
    from llmcli.chat.conversation import Conversation
    from llmcli.chat.engine import ChatSession

    conv = Conversation(params=SamplingParams(temperature=0.0, max_tokens=REPLY_TOKENS, seed=1),
                        system="You are a helpful, concise assistant.")
    backend.reset()
    session = ChatSession(backend, conv)
    if not reuse:
        session.schedule_prefill = lambda: None  # its work would be thrown away by the reset
    out = []
    for turn in range(1, TURNS + 1):
        if not reuse:
            backend.reset()
        sink = _FirstTextSink()
        t0 = time.perf_counter()
        result = session.send(user_message(turn), sink)
        first = sink.first if sink.first is not None else time.perf_counter()
        s = result.reply.stats
        out.append((first - t0, s.prompt_tokens, s.prompt_tokens_processed))
    return out


def _rows(label: str, backend, repeats: int) -> list[Row]:
    conversation(backend, reuse=True)  # warm-up
    ours: list[list[tuple[float, int, int]]] = []
    ref: list[list[tuple[float, int, int]]] = []
    for i in range(repeats):
        _log(f"  {label}: repetition {i + 1}/{repeats}")
        ours.append(conversation(backend, reuse=True))
        ref.append(conversation(backend, reuse=False))
    med = statistics.median
    ref_name = "same conversation, cache reset before each turn"
    rows = []
    for turn in MEASURED:
        rows.append(Row(f"{label}: time to first token, turn {turn}", med(r[turn - 1][0] for r in ours) * 1000,
                        med(r[turn - 1][0] for r in ref) * 1000, "ms", ref_name, lower_is_better=True))
    growth_ours = med(r[-1][0] / r[0][0] for r in ours)
    growth_ref = med(r[-1][0] / r[0][0] for r in ref)
    rows.append(Row(f"{label}: TTFT turn {TURNS} / turn 1 (target ≤ 1.5 with reuse)", growth_ours, growth_ref, "×",
                    ref_name, lower_is_better=True))
    last_ours, last_ref = ours[-1][-1], ref[-1][-1]
    rows.append(Row(f"{label}: prompt tokens evaluated at turn {TURNS} (prompt: {last_ours[1]} tokens with reuse, "
                    f"{last_ref[1]} without)", last_ours[2], last_ref[2], "tok", ref_name, lower_is_better=True))
    growth = (last_ours[1] - ours[-1][0][1]) / (TURNS - 1)
    _log(f"  {label}: the prompt grew by {growth:.0f} tokens a turn on average")
    return rows


def run(model_path, threads: int | None, repeats: int = 5) -> list[Row]:
    from llmcli.backends.llamacpp import LlamaCppBackend

    model_path = Path(model_path)
    rows: list[Row] = []
    if model_path.is_file():
        b = LlamaCppBackend(model_path, ctx_cap=CTX, threads=threads)
        try:
            rows += _rows("llama.cpp", b, repeats)
        finally:
            b.close()
    try:
        from llmcli.backends.select import BackendOptions
        from llmcli.backends.torch import TorchBackend
        from llmcli.bench.torch import hf_folder_for
        from llmcli.store.refs import ModelRef
    except ImportError as e:
        _log(f"  torch backend not available ({e}): torch rows skipped")
        return rows
    folder = hf_folder_for(model_path)
    t = TorchBackend(ModelRef(folder, "hf"), BackendOptions(device="cpu", threads=threads, ctx=CTX))
    try:
        rows += _rows("torch (CPU, fp32)", t, repeats)
    finally:
        t.close()
    return rows
