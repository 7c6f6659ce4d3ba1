"""Chat pieces without a model: conversation state, fitting, commands, input blocks, session files."""

from __future__ import annotations

import json
import os

import pytest

from llmcli.backends.base import Message, SamplingParams
from llmcli.chat import sessions
from llmcli.chat.commands import Command, parse
from llmcli.chat.conversation import FORMAT_VERSION, RETRY_SEED_STRIDE, Conversation
from llmcli.chat.fitting import Overflow, fit, reply_reserve
from llmcli.chat.repl import read_message
from llmcli.fileio import WriteError
from llmcli.errors import UsageError


def conv_with(n: int, **kw) -> Conversation:
    c = Conversation(params=SamplingParams(seed=100), **kw)
    for i in range(n):
        c.add_user(f"q{i}")
        c.add_reply(f"a{i}", seed=c.reply_seed())
    return c


# --- conversation ------------------------------------------------------------------------------

def test_messages_undo_retry_and_seeds():
    c = conv_with(2, system="S")
    assert [m.content for m in c.messages] == ["q0", "a0", "q1", "a1"]
    assert [m.seed for m in c.messages if m.role == "assistant"] == [100, 101]  # seed + turn
    assert c.model_messages() == [Message("system", "S"), Message("user", "q0"), Message("assistant", "a0"),
                                  Message("user", "q1"), Message("assistant", "a1")]
    assert c.retry() == "q1"
    assert c.pending and c.reply_seed() == 101 + RETRY_SEED_STRIDE  # a retry is a new sample…
    c.add_reply("a1-bis", seed=c.reply_seed())
    assert c.messages[-1].attempt == 1
    assert c.retry() == "q1" and c.reply_seed() == 101 + 2 * RETRY_SEED_STRIDE  # …and the next one another
    c.add_reply("a1-ter")
    assert c.undo() and [m.content for m in c.messages] == ["q0", "a0"]
    c.add_user("q1'")
    assert c.reply_seed() == 101  # a new message for turn 1 starts again at seed + 1
    assert c.undo() and not c.pending  # undo of a pending message drops just it
    assert c.undo() and c.messages == [] and not c.undo()


def test_add_user_refuses_when_a_reply_is_pending():
    c = conv_with(0)
    c.add_user("a")
    with pytest.raises(UsageError):
        c.add_user("b")


def test_random_base_seed_is_concrete_and_n_is_one():
    c = Conversation(params=SamplingParams(n=3))
    assert isinstance(c.params.seed, int) and c.params.n == 1


def test_thinking_is_passed_only_as_reasoning_content():
    c = conv_with(0)
    c.add_user("q")
    c.add_reply("answer", thinking="secret steps")
    m = c.model_messages()[-1]
    assert m.content == "answer" and m.to_dict() == {"role": "assistant", "content": "answer",
                                                      "reasoning_content": "secret steps"}


def test_set_param_parses_and_validates():
    c = conv_with(0)
    c.set_param("temperature", "0.2")
    c.set_param("max-tokens", "64")
    c.set_param("stop", "\\n\\n")
    assert c.params.temperature == 0.2 and c.params.max_tokens == 64 and c.params.stop == ("\n\n",)
    c.set_param("stop", '["a", "b"]')
    assert c.params.stop == ("a", "b")
    c.set_param("stop", "none")
    c.set_param("max_tokens", "none")
    assert c.params.stop == () and c.params.max_tokens is None
    for name, value in [("temperature", "hot"), ("top_p", "2"), ("n", "2"), ("colour", "1"), ("top_k", "-1")]:
        with pytest.raises(UsageError):
            c.set_param(name, value)
    assert c.params.temperature == 0.2  # a failed /set changes nothing
    assert any(line.startswith("temperature = 0.2") for line in c.param_lines())


def test_json_round_trip_and_version_checks():
    c = conv_with(2, system="sys")
    c.add_user("q2")
    c.add_reply("partial", interrupted=True, thinking="t", seed=7)
    c.context_start = 1
    c.model = "smol"
    again = Conversation.from_json(c.to_json())
    assert again.to_dict() == c.to_dict()
    d = c.to_dict()
    assert d["version"] == FORMAT_VERSION and d["messages"][-1]["interrupted"] is True
    with pytest.raises(ValueError, match="newer"):
        Conversation.from_dict({**d, "version": FORMAT_VERSION + 1})
    for bad in ({**d, "format": "x"}, {**d, "messages": [{"role": "assistant", "content": "x"}]},
                {**d, "params": {"temperature": -1}}, {**d, "messages": "no"}, [1, 2]):
        with pytest.raises(ValueError):
            Conversation.from_dict(bad)
    with pytest.raises(ValueError, match="invalid JSON"):
        Conversation.from_json("{ not json")


def test_markdown_export():
    c = conv_with(1, system="Be terse.")
    c.add_user("more?")
    c.add_reply("half", interrupted=True)
    md = c.to_markdown()
    assert md.startswith("# Chat transcript")
    assert "## System\n\nBe terse." in md and "## You\n\nq0" in md and "## Assistant\n\na0" in md
    assert "half\n\n*(interrupted)*" in md


# --- fitting -----------------------------------------------------------------------------------

def make_count(system: int, sizes: list[int], new: int):
    return lambda s: system + sum(sizes[s:]) + new


def test_fit_keeps_everything_when_it_fits():
    f = fit(3, 0, make_count(10, [20, 20, 20], 5), n_ctx=100, reserve=10)
    assert (f.start, f.dropped, f.tokens) == (0, 0, 75)


def test_fit_drops_oldest_down_to_half_the_window_and_is_sticky():
    count = make_count(10, [30] * 10, 5)  # 315 tokens in all
    f = fit(10, 0, count, n_ctx=256, reserve=16)
    # keeping 4 exchanges: 10 + 4*30 + 5 = 135 > 128 (half the window); keeping 3: 105
    assert (f.start, f.dropped, f.tokens) == (7, 7, 105)
    # the next turn keeps the start, even though an earlier start would fit again
    f2 = fit(11, f.start, make_count(10, [30] * 11, 5), n_ctx=256, reserve=16)
    assert f2.start == 7 and f2.dropped == 0


def test_fit_falls_back_to_the_budget_when_half_is_impossible():
    count = make_count(100, [10, 10], 60)  # system + new message alone = 160 > 128
    f = fit(2, 0, count, n_ctx=256, reserve=80)  # budget 176
    assert f.start == 1 and f.tokens == 170


def test_fit_overflow_when_the_message_alone_is_too_big():
    with pytest.raises(Overflow) as e:
        fit(2, 0, make_count(10, [5, 5], 300), n_ctx=256, reserve=16)
    assert e.value.tokens == 310 and e.value.budget == 240


def test_reply_reserve():
    assert reply_reserve(8, 256) == 8
    assert reply_reserve(None, 4096) == 512
    assert reply_reserve(None, 256) == 128 and reply_reserve(10_000, 256) == 128


# --- commands and input ------------------------------------------------------------------------

def test_parse_commands():
    assert parse("/set temperature 0.2") == Command("set", "temperature 0.2")
    assert parse("/QUIT") == Command("exit") and parse("/?") == Command("help")
    assert parse("/system You are\na pirate.") == Command("system", "You are\na pirate.")
    assert parse("//etc/hosts is a file") == "/etc/hosts is a file"
    assert parse("hello /set") == "hello /set"
    assert parse("/ spaced") == "/ spaced"


def lines_reader(lines):
    it = iter(lines)

    def next_line(_prompt):
        try:
            return next(it)
        except StopIteration:
            raise EOFError from None

    return next_line


def test_multiline_blocks():
    r = lines_reader(['"""', "a", "", "b", '"""', "single", '"""inline"""', '"""start', 'end"""', '"""', "x"])
    assert read_message(r) == "a\n\nb"
    assert read_message(r) == "single"
    assert read_message(r) == "inline"
    assert read_message(r) == "start\nend"
    with pytest.raises(EOFError):  # an unfinished block at the end of input is discarded
        read_message(r)


# --- session files -----------------------------------------------------------------------------

def test_save_load_list_latest(isolated_dirs):
    assert sessions.latest() is None and sessions.list_sessions() == []
    c = conv_with(2)
    c.model = "/models/smol.gguf"
    a = sessions.target_path("trip")
    assert a == sessions.sessions_dir() / "trip.json"
    sessions.save(a, c)
    b = sessions.sessions_dir() / "later.json"
    sessions.save(b, conv_with(1))
    os.utime(a, (1, 1))
    assert sessions.latest() == b
    assert sessions.load(a).to_dict() == c.to_dict()
    infos = sessions.list_sessions()
    assert [i.name for i in infos] == ["later", "trip"]
    assert infos[1].messages == 4 and infos[1].preview == "q0" and infos[1].model == "smol.gguf"
    assert not [p for p in sessions.sessions_dir().iterdir() if p.name.startswith(".")]  # no temp files left
    assert "trip" in sessions.format_list(infos)


def test_target_path_names_and_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert sessions.target_path("trip.json") == tmp_path / "trip.json" or \
        sessions.target_path("trip.json").resolve() == tmp_path / "trip.json"
    assert sessions.target_path("./x").name == "x"
    with pytest.raises(UsageError):
        sessions.target_path("  ")


def test_corrupt_file_is_reported_and_never_overwritten(isolated_dirs):
    p = sessions.sessions_dir() / "broken.json"
    p.parent.mkdir(parents=True)
    p.write_text('{"format": "llmcli-chat", "version": 1, "messages": [')
    with pytest.raises(sessions.SessionError) as e:
        sessions.load(p)
    assert "corrupt" in e.value.message and str(p) in e.value.message and "not overwrite" in e.value.hint
    assert "(corrupt" in sessions.format_list(sessions.list_sessions())
    p.write_bytes(b"\xff\xfe")
    with pytest.raises(sessions.SessionError, match="not UTF-8"):
        sessions.load(p)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "c.json"
    target.write_text("old")

    def boom(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(WriteError, match="No space left on device"):
        sessions.atomic_write(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["c.json"]


def test_autosaver_writes_nothing_for_an_empty_conversation(tmp_path):
    path = tmp_path / "s.json"
    saver = sessions.Autosaver(path)
    saver.save(Conversation())
    assert not path.exists()
    c = conv_with(1)
    saver.save(c)
    assert json.loads(path.read_text())["messages"][0]["content"] == "q0"
    sessions.Autosaver(tmp_path / "off.json", enabled=False).save(c)
    assert not (tmp_path / "off.json").exists()


def test_force_form_of_writing_commands():
    assert parse("/save! ./x.json") == Command("save", "./x.json", force=True)
    assert parse("/export! t.md") == Command("export", "t.md", force=True)
    assert parse("/save x") == Command("save", "x")
    assert parse("/load! x").name == "load!"  # only commands that write have a force form


def test_autosaver_removes_a_file_it_created_when_the_conversation_empties(tmp_path):
    path = tmp_path / "s.json"
    saver = sessions.Autosaver(path)
    c = conv_with(1)
    saver.save(c)
    assert path.exists()
    c.messages.clear()
    saver.save(c)
    assert not path.exists()
    resumed = tmp_path / "old.json"
    sessions.save(resumed, conv_with(1))
    other = sessions.Autosaver(resumed)  # a file it did not create is kept, even emptied
    other.save(Conversation())
    assert resumed.exists() and json.loads(resumed.read_text())["messages"] == []
