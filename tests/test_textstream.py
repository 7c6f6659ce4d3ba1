"""Pure stream plumbing: stop strings, UTF-8 boundaries, think markers — on synthetic token streams."""

from __future__ import annotations

import pytest

from llmcli.backends.base import Finish, GenerationStats, SamplingParams, TextChunk, TokenEvent
from llmcli.backends.textstream import StopScanner, drive, held_suffix_len
from llmcli.thinking import ThinkFilter, strip_thinking


def run_drive(pieces: list[bytes], params=SamplingParams(), end_at: int | None = None):
    ids = list(range(len(pieces)))
    events = list(drive(iter(ids), piece=lambda t: pieces[t], is_end=lambda t: t == end_at, params=params,
                        stats=GenerationStats()))
    assert isinstance(events[-1], Finish)
    return [e.text for e in events[:-1]], events[-1]


def test_multibyte_character_never_split():
    emoji = "👍🏽".encode()  # 8 bytes, delivered one byte per token
    texts, fin = run_drive([b"ok "] + [bytes([b]) for b in emoji] + [b"!"])
    assert fin.text == "ok 👍🏽!"
    for t in texts:
        t.encode("utf-8")  # every released chunk is valid text on its own
        assert "\ufffd" not in t
    assert texts[1:4] == ["", "", ""]  # nothing released until the first code point is complete


def test_stop_string_across_tokens_is_cut_and_not_printed():
    texts, fin = run_drive([b"Hello", b" wo", b"rld", b"\n", b"\n", b"more"], SamplingParams(stop=("\n\n",)))
    assert fin.text == "Hello world"
    assert "".join(texts) == "Hello world"
    assert fin.stats.finish_reason == "stop"
    assert fin.stats.generated_tokens == 5


def test_partial_stop_prefix_released_when_stream_ends():
    texts, fin = run_drive([b"a", b"b", b"EN"], SamplingParams(stop=("END",)))
    assert fin.text == "abEN"
    assert "".join(texts) == "abEN"
    assert fin.stats.finish_reason == "length"


def test_max_tokens_exact_and_eos():
    _, fin = run_drive([b"x"] * 10, SamplingParams(max_tokens=4))
    assert fin.text == "xxxx" and fin.stats.generated_tokens == 4 and fin.stats.finish_reason == "length"
    _, fin = run_drive([b"a", b"b", b"<eos>", b"c"], end_at=2)
    assert fin.text == "ab" and fin.stats.finish_reason == "stop" and fin.token_ids == [0, 1]


def test_held_suffix_len():
    assert held_suffix_len("abc<th", ["<think>"]) == 3
    assert held_suffix_len("abc", ["<think>"]) == 0
    assert held_suffix_len("x\n", ["\n\n"]) == 1


def test_stop_scanner_releases_non_matching_text_immediately():
    s = StopScanner(["STOP"])
    assert s.feed("abc S") == ("abc ", False)
    assert s.feed("x") == ("Sx", False)
    assert s.feed("ST") == ("", False)
    assert s.feed("OP tail") == ("", True)


@pytest.mark.parametrize("split", [1, 2, 3, 5, 100])
def test_think_filter_any_token_boundary(split):
    text = "<think>I should greet.\n</think>\n\nHello! <b>bold</b>"
    f = ThinkFilter()
    parts = []
    for i in range(0, len(text), split):
        parts += f.feed(text[i:i + split])
    parts += f.flush()
    thinking = "".join(t for th, t in parts if th)
    answer = "".join(t for th, t in parts if not th)
    assert thinking == "I should greet.\n"
    assert answer == "\n\nHello! <b>bold</b>"


def test_think_filter_started_by_template_and_unterminated():
    f = ThinkFilter(start_thinking=True)
    parts = f.feed("hmm</thi") + f.feed("nk>answer") + f.flush()
    assert parts == [(True, "hmm"), (False, "answer")]
    f = ThinkFilter()
    parts = f.feed("<think>still thinking <") + f.flush()
    assert "".join(t for th, t in parts if th) == "still thinking <"


def test_strip_thinking_for_history():
    assert strip_thinking("<think>x</think>\n\nAnswer") == "Answer"
    assert strip_thinking("Plain answer") == "Plain answer"


def test_token_event_shape():
    ev = TokenEvent(5, "hi")
    assert ev.token_id == 5 and ev.text == "hi"


# --- text chunks (a server backend's stream): the same rules as ids ------------------------------------

def run_chunks(chunks, params=SamplingParams()):
    stats = GenerationStats()
    events = list(drive(iter(chunks), params=params, stats=stats))
    assert isinstance(events[-1], Finish)
    return events[:-1], events[-1]


def test_chunks_stop_string_across_chunks_is_cut():
    events, fin = run_chunks([TextChunk("Hello wo"), TextChunk("rld\n"), TextChunk("\nmore"), TextChunk("x")],
                             SamplingParams(stop=("\n\n",)))
    assert fin.text == "Hello world" and fin.stats.finish_reason == "stop"
    assert "".join(e.text for e in events) == "Hello world"
    assert fin.stats.generated_tokens == 3  # the chunk holding the stop string was generated


def test_chunks_max_tokens_counts_tokens_not_chunks():
    events, fin = run_chunks([TextChunk("ab", tokens=2), TextChunk("cd", tokens=2), TextChunk("ef", tokens=2)],
                             SamplingParams(max_tokens=4))
    assert fin.text == "abcd" and fin.stats.generated_tokens == 4 and fin.stats.finish_reason == "length"
    assert [e.tokens for e in events] == [2, 2]


def test_chunks_finish_reason_and_usage_correction_from_the_last_chunk():
    events, fin = run_chunks([TextChunk("a"), TextChunk("b"), TextChunk("", tokens=1, finish_reason="stop"),
                              TextChunk("never")])
    assert fin.text == "ab" and fin.stats.finish_reason == "stop" and fin.stats.generated_tokens == 3
    assert fin.token_ids == [] and all(e.token_id == -1 for e in events)


def test_chunks_with_ids_report_them():
    _, fin = run_chunks([TextChunk("a", token_ids=(5,)), TextChunk("b", token_ids=(6,))])
    assert fin.token_ids == [5, 6]


def test_interrupt_closes_the_source():
    closed = []

    def source():
        try:
            yield TextChunk("a")
            raise KeyboardInterrupt
        finally:
            closed.append(True)

    stats = GenerationStats()
    with pytest.raises(KeyboardInterrupt):
        list(drive(source(), params=SamplingParams(), stats=stats))
    assert closed == [True] and stats.finish_reason == "interrupted" and stats.generated_tokens == 1
