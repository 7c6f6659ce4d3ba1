"""`-f/--file` on generate, tokenize --chat and chat, and chat's /file and /files (issue 15, item 1):
the real SmolLM2 GGUF in real subprocesses (and a real pseudo-terminal)."""

from __future__ import annotations

import json

from conftest import run_cli
from llmcli.attachments import Attachment, compose
from llmcli.chat.conversation import Conversation

REPORT = "Sales rose 4% in May.\nCosts were flat.\n"
DATA = "month,sales\nmay,104\n"  # no final newline is added by the layout when present
STDIN = "extra notes from a pipe\n"
INSTRUCTION = "Summarize"
# The documented layout (docs/usage.md, "Files as context"), written out by hand.
EXPECTED = ("File: report.md\n```\nSales rose 4% in May.\nCosts were flat.\n```\n\n"
            "File: data.csv\n```\nmonth,sales\nmay,104\n```\n\n"
            "extra notes from a pipe\n\nSummarize")


def _files(tmp_path):
    (tmp_path / "report.md").write_text(REPORT)
    (tmp_path / "data.csv").write_text(DATA)


def test_layout_fences_are_longer_than_backticks_inside():
    a = Attachment("x.md", "a ```` b")
    assert a.block() == "File: x.md\n`````\na ```` b\n`````"
    assert compose([a], None, None) == a.block()


def test_two_files_stdin_and_argument_give_the_documented_prompt(gguf_path, tmp_path, monkeypatch):
    _files(tmp_path)
    monkeypatch.chdir(tmp_path)
    args = ["-m", str(gguf_path), "-f", "report.md", "-f", "data.csv"]
    r = run_cli("tokenize", "--chat", *args, "--pieces", INSTRUCTION, input=STDIN, check=True)
    pieces = "".join(json.loads(line.split("\t", 1)[1]) for line in r.stdout.splitlines())
    assert f"<|im_start|>user\n{EXPECTED}<|im_end|>" in pieces
    # The same ids as the composed text given as the argument.
    plain = run_cli("tokenize", "--chat", "-m", str(gguf_path), EXPECTED, check=True)
    ids = run_cli("tokenize", "--chat", *args, INSTRUCTION, input=STDIN, check=True)
    assert ids.stdout == plain.stdout
    # A greedy generate sees exactly that prompt.
    gen = ["generate", "--temperature", "0", "--max-tokens", "12", "--json"]
    with_files = json.loads(run_cli(*gen, *args, INSTRUCTION, input=STDIN, check=True).stdout)
    by_hand = json.loads(run_cli(*gen, "-m", str(gguf_path), EXPECTED, check=True).stdout)
    assert with_files["text"] == by_hand["text"] and with_files["text"]
    assert with_files["usage"]["prompt_tokens"] == by_hand["usage"]["prompt_tokens"] == len(ids.stdout.split())


def test_dash_reads_stdin_as_a_labelled_file(gguf_path, tmp_path, monkeypatch):
    _files(tmp_path)
    monkeypatch.chdir(tmp_path)
    r = run_cli("tokenize", "--chat", "-m", str(gguf_path), "-f", "-", "-f", "data.csv", "--pieces", "Go",
                input=STDIN, check=True)
    pieces = "".join(json.loads(line.split("\t", 1)[1]) for line in r.stdout.splitlines())
    assert "File: stdin\n```\nextra notes from a pipe\n```\n\nFile: data.csv\n" in pieces
    assert pieces.count("extra notes") == 1  # stdin is not also added unlabelled


def test_file_overflowing_the_window_is_an_error_naming_it(gguf_path, bad):
    (bad.work / "big.txt").write_text("lorem ipsum dolor sit amet " * 200)
    (bad.work / "small.txt").write_text("hello\n")
    r = bad.run("generate", "-m", str(gguf_path), "--ctx", "256", "-f", "small.txt", "-f", "big.txt", "Summarize",
                expect=2, message="context window is 256 tokens")
    line = r.stderr.strip()
    assert "big.txt" in line and "small.txt" in line and "tokens" in line


def test_binary_non_utf8_missing_and_folder_files_are_errors(gguf_path, bad):
    (bad.work / "blob.bin").write_bytes(b"\x7fELF\x00\x01\x02")
    (bad.work / "latin1.txt").write_bytes("café".encode("latin-1"))
    (bad.work / "folder").mkdir()
    m = str(gguf_path)
    bad.run("generate", "-m", m, "-f", "blob.bin", "hi", expect=1, message="blob.bin is a binary file")
    bad.run("generate", "-m", m, "-f", "latin1.txt", "hi", expect=1, message="latin1.txt is not UTF-8 text")
    bad.run("tokenize", "--chat", "-m", m, "-f", "blob.bin", "hi", expect=1, message="UTF-8 text without NUL")
    bad.run("generate", "-m", m, "-f", "nope.txt", "hi", expect=1, message="file not found: nope.txt")
    bad.run("generate", "-m", m, "-f", "folder", "hi", expect=1, message="is a folder")
    bad.run("generate", "-m", m, "-f", "-", "-f", "-", "hi", expect=2, message="more than once")
    bad.run("chat", "-m", m, "-f", "-", expect=2, message="stdin carries the messages")
    bad.run("tokenize", "-m", m, "-f", "blob.bin", "hi", expect=2, message="only applies with --chat")


def test_piped_chat_file_and_files(gguf_path, tmp_path, isolated_dirs):
    _files(tmp_path)
    r = run_cli("chat", "-m", str(gguf_path), "--temperature", "0", "--max-tokens", "8", "-f",
                str(tmp_path / "report.md"),
                input=f"/files\nWhat rose?\n/file {tmp_path / 'data.csv'}\n/files\nAnd the data?\n/files\n",
                check=True)
    err = r.stderr
    assert f"{tmp_path / 'report.md'}  " in err and "they go with the next message" in err
    assert f"attached {tmp_path / 'data.csv'} (" in err
    assert err.rstrip().endswith("no files attached (/file PATH attaches one to the next message)")
    saved = next((isolated_dirs / "data" / "sessions").glob("*.json"))
    users = [m.content for m in Conversation.from_json(saved.read_text()).messages if m.role == "user"]
    assert users == [compose([Attachment(str(tmp_path / "report.md"), REPORT)], None, "What rose?"),
                     compose([Attachment(str(tmp_path / "data.csv"), DATA)], None, "And the data?")]


def test_pty_chat_file_command(gguf_path, tmp_path):
    import pexpect
    from test_chat_pty import PROMPT, spawn, transcript, turn

    _files(tmp_path)
    c = spawn(["-m", str(gguf_path), "--temperature", "0", "--max-tokens", "8", "--stats", "--no-save"],
              cwd=tmp_path)
    try:
        c.expect_exact(PROMPT)
        c.sendline("/file report.md")
        c.expect(r"attached report\.md \(\d+ tokens\) to the next message")
        c.expect_exact(PROMPT)
        c.sendline("/files")
        c.expect(r"report\.md  \d+ tokens")
        c.expect_exact(PROMPT)
        c.sendline("/file blob.bin")
        c.expect("file not found: blob.bin")
        c.expect_exact(PROMPT)
        turn(c, "What rose?")
        c.sendline("/files")
        c.expect("no files attached")
        c.expect_exact(PROMPT)
        c.sendline("/exit")
        c.expect(pexpect.EOF)
    finally:
        c.close(force=True)
    assert "Traceback" not in transcript(c)
