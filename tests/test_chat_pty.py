"""The real REPL in a pseudo-terminal (pexpect) with the real SmolLM2 model: prompts, line
editing keys, multi-line input, every slash command, Ctrl-C and Ctrl-D, Markdown without colour."""

from __future__ import annotations

import io
import os
import re
import sys
import time

import pexpect

from llmcli.chat.conversation import Conversation

PROMPT = ">>>"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
COLOUR = re.compile(r"\x1b\[[0-9;]*?(?:3[0-7]|9[0-7]|38;[25])(?:;[0-9;]*)?m")


def spawn(args: list[str], *, cwd=None, env_extra: dict | None = None, shell: str | None = None):
    env = dict(os.environ, PROMPT_TOOLKIT_NO_CPR="1", TERM="xterm-256color")
    env.update(env_extra or {})
    if shell is not None:
        c = pexpect.spawn("bash", ["-c", shell], env=env, cwd=cwd, dimensions=(50, 160), timeout=120,
                          encoding="utf-8", codec_errors="replace")
    else:
        c = pexpect.spawn(sys.executable, ["-m", "llmcli", "chat", *args], env=env, cwd=cwd, dimensions=(50, 160),
                          timeout=120, encoding="utf-8", codec_errors="replace")
    c.logfile_read = io.StringIO()  # the whole transcript, for assertion messages
    return c


def transcript(c) -> str:
    return ANSI.sub("", c.logfile_read.getvalue())


def turn(c, text: str) -> None:
    """Send a message and wait for the reply's --stats line and the next prompt."""
    c.sendline(text)
    c.expect(r"finish: (stop|length)")
    c.expect_exact(PROMPT)


def command(c, text: str, expect: str) -> None:
    c.sendline(text)
    c.expect(expect)
    c.expect_exact(PROMPT)


def test_conversation_multiline_and_every_command(gguf_path, tmp_path, isolated_dirs):
    c = spawn(["-m", str(gguf_path), "--temperature", "0", "--max-tokens", "24", "--stats", "--session", "pty1"],
              cwd=tmp_path)
    try:
        c.expect("llmcli chat · ")
        c.expect("/help")
        c.expect_exact(PROMPT)
        turn(c, "Hi")
        turn(c, "And in French?")
        command(c, "/undo", "dropped the last exchange")
        # multi-line: a """ block …
        c.sendline('"""')
        c.sendline("Line one")
        c.sendline('line two"""')
        c.expect(r"finish: (stop|length)")
        c.expect_exact(PROMPT)
        # … and Esc-Enter (what Alt-Enter sends) inserts a newline instead of sending
        c.send("first")
        c.send("\x1b\r")
        c.send("second\r")
        c.expect(r"finish: (stop|length)")
        c.expect_exact(PROMPT)
        command(c, "/help", r"/export\[!\] FILE\.md")
        command(c, "/set", r"temperature = 0\.0")
        command(c, "/set temperature 0.2", r"set temperature = 0\.2")
        command(c, "/set temperature hot", r"invalid temperature hot")
        command(c, "/system You are a pirate.", "system prompt replaced")
        command(c, "/system", "system prompt: You are a pirate.")
        c.sendline("/retry")
        c.expect(r"finish: (stop|length)")
        c.expect_exact(PROMPT)
        command(c, "/stats", r"context: \d+ / 4096 tokens")
        command(c, "/context", r"dropped next when the window is full: exchange 1")
        command(c, "/save trip.json", "saved to trip.json")
        command(c, "/export trip.md", "transcript written to trip.md")
        command(c, "/clear", "new conversation")
        command(c, "/context", "nothing to drop")
        command(c, "/load trip.json", r"loaded trip\.json: 3 exchange")
        command(c, f"/model {gguf_path}", "switched to")
        turn(c, "Thanks!")
        command(c, "/bogus", "unknown command /bogus")
        c.sendline("/exit")
        c.expect(pexpect.EOF)
    finally:
        c.close()
    assert c.exitstatus == 0, transcript(c)

    saved = Conversation.from_json((tmp_path / "trip.json").read_text())
    users = [m.content for m in saved.messages if m.role == "user"]
    assert users == ["Hi", "Line one\nline two", "first\nsecond"]
    assert saved.messages[-1].attempt == 1  # the /retry
    assert saved.system == "You are a pirate." and saved.params.temperature == 0.2
    md = (tmp_path / "trip.md").read_text()
    assert "## You\n\nLine one\nline two" in md and "## System" in md
    # autosave: the --session file kept the first conversation; /load went on in a new session file
    sessions_dir = isolated_dirs / "data" / "sessions"
    first = Conversation.from_json((sessions_dir / "pty1.json").read_text())
    assert [m.content for m in first.messages if m.role == "user"] == users
    later = [p for p in sessions_dir.glob("*.json") if p.name != "pty1.json"]
    assert any(Conversation.from_json(p.read_text()).messages[-2].content == "Thanks!" for p in later)
    assert (isolated_dirs / "data" / "chat_history").read_text().count("Hi") >= 1  # persistent input history


def test_ctrl_c_mid_reply_then_ctrl_d_leaves_a_sane_terminal(gguf_path, isolated_dirs):
    cmd = (f"{sys.executable} -m llmcli chat -m {gguf_path} --temperature 0 --max-tokens 400 --stats "
           "--session cc; echo EXIT=$?; stty -a")
    c = spawn([], shell=cmd)
    try:
        c.expect_exact(PROMPT)
        c.sendline("Write a very long story about a dragon who learns to paint.")
        time.sleep(2.0)
        t0 = time.monotonic()
        c.sendintr()
        c.expect("interrupted: the partial reply is kept")
        stopped_after = time.monotonic() - t0
        c.expect(r"generated: (\d+) tokens .* finish: interrupted")
        generated = int(c.match.group(1))
        c.expect_exact(PROMPT)
        # keep the next reply short: a 400-token story takes minutes on a loaded CI machine
        command(c, "/set max_tokens 40", "max_tokens = 40")
        turn(c, "Give it a short title.")  # the session goes on
        c.sendintr()  # at an empty prompt: a hint, not an exit
        c.expect("to leave, type /exit or press Ctrl-D")
        c.expect_exact(PROMPT)
        c.sendeof()
        c.expect(r"EXIT=(\d+)")
        code = int(c.match.group(1))
        c.expect(pexpect.EOF)
        stty = c.before
    finally:
        c.close()
    assert code == 0, transcript(c)
    assert stopped_after < 2.0 and generated < 400
    assert re.search(r"(?<![-\w])icanon\b", stty) and re.search(r"(?<![-\w])echo\b", stty), stty
    conv = Conversation.from_json((isolated_dirs / "data" / "sessions" / "cc.json").read_text())
    assert conv.messages[1].interrupted and not conv.messages[3].interrupted
    assert len(conv.messages) == 4


def test_markdown_rendering_never_colours_with_no_color(gguf_path):
    c = spawn(["-m", str(gguf_path), "--temperature", "0", "--max-tokens", "48", "--markdown", "--no-save"],
              env_extra={"NO_COLOR": "1"})
    try:
        c.expect_exact(PROMPT)
        start = len(c.logfile_read.getvalue())
        c.sendline("List three fruits as a Markdown bullet list.")
        c.expect_exact(PROMPT)
        c.expect_exact(PROMPT)  # the accepted line is redrawn once, then the next prompt appears
        c.sendline("/exit")
        c.expect(pexpect.EOF)
    finally:
        c.close()
    out = c.logfile_read.getvalue()[start:]
    assert c.exitstatus == 0
    assert not COLOUR.search(out), repr(out[:2000])
    assert re.search(r"\w", ANSI.sub("", out))
