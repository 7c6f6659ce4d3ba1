"""Bad-input rows for writes, output and templates (issue 10): /save and /export never clobber,
piped untrusted text, hostile chat templates and their budget, unusable data dirs, stdout that is
closed, full or a pipe whose reader left, session names. Each row runs the real CLI (``bad``
fixture, tests/badinput.py) on the real SmolLM2 GGUF."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from llmcli.chat.sessions import EXPORT_MARKER

CHAT = ("chat", "--temperature", "0", "--max-tokens", "4", "--no-save")


def chat(gguf_path, *extra):
    return (*CHAT, "-m", str(gguf_path), *extra)


# --- /save and /export never clobber -----------------------------------------------------------

@pytest.fixture
def precious(bad):
    p = bad.work / "v.txt"
    p.write_text("precious\n")
    return p


@pytest.mark.parametrize("line,needle", [
    ("/save ./v.txt", "not an llmcli saved conversation"),
    ("/export v.txt", "not an llmcli chat transcript"),
    ("/save link.json", "symbolic link"),
    ("/save! link.json", "symbolic link"),
    ("/export! link.md", "symbolic link"),
    ("/save! ./folder", "is a directory"),
    ("/export fifo", "FIFO"),
    ("/export! fifo", "FIFO"),
    ("/save missing/x.json", "folder does not exist"),
])
def test_save_and_export_refuse_to_clobber(bad, gguf_path, precious, line, needle):
    (bad.work / "link.json").symlink_to("v.txt")
    (bad.work / "link.md").symlink_to("v.txt")
    (bad.work / "folder").mkdir()
    os.mkfifo(bad.work / "fifo")
    bad.run(*chat(gguf_path), input=f"{line}\n", expect=1, message=needle)
    assert precious.read_text() == "precious\n"
    assert not (bad.work / "missing").exists()


def test_export_onto_a_device_is_refused_even_with_force(bad, gguf_path):
    before = os.stat("/dev/null")
    bad.run(*chat(gguf_path), input="/export! /dev/null\n", expect=1, message="device")
    after = os.lstat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev


def test_save_creates_no_folder_outside_llmcli(bad, gguf_path):
    target = Path("/nonexistent-llmcli-test-dir")
    assert not target.exists()
    bad.run(*chat(gguf_path), input=f"/save {target}/x.json\n", expect=1, message="folder does not exist")
    assert not target.exists()


def test_force_replaces_a_plain_file_and_own_files_are_replaced_without_it(bad, gguf_path, precious):
    notes = bad.work / "notes.md"
    notes.write_text("# my notes\n")
    precious.chmod(0o640)
    r = bad.run(*chat(gguf_path), input="Hi\n/save! ./v.txt\n/export! notes.md\n/save ./v.txt\n/export notes.md\n",
                expect=0, stdout_ok=True, may_change=("v.txt", "notes.md"))
    assert r.stdout.strip()
    saved = json.loads(precious.read_text())
    assert saved["format"] == "llmcli-chat" and saved["messages"][0]["content"] == "Hi"
    assert notes.read_text().startswith(EXPORT_MARKER + "\n# Chat transcript")
    assert stat.S_IMODE(precious.stat().st_mode) == 0o640  # the replaced file keeps its mode


def test_no_commands_sends_slash_lines_as_messages(bad, gguf_path):
    r = bad.run(*chat(gguf_path, "--no-commands"), input="/save x.json\n/export x.md\n", expect=0, stdout_ok=True)
    assert len(r.stdout.splitlines()) >= 2  # two replies
    assert not (bad.work / "x.json").exists() and not (bad.work / "x.md").exists()


def test_unterminated_block_is_an_error_and_not_sent(bad, gguf_path):
    bad.run(*chat(gguf_path), input='"""\nhello\nno end\n', expect=1, message='inside a """ block')


# --- session names, data dir, empty sessions ----------------------------------------------------

@pytest.mark.parametrize("name", ["a\nb", "a b", "..", "-x", "a\\b", "x" * 101])
def test_session_names_that_are_not_file_names(bad, gguf_path, name):
    bad.run("chat", "-m", str(gguf_path), "--session", name, input="Hi\n", expect=2, message="session name")


def test_data_dir_that_is_a_file(bad, gguf_path, tmp_path):
    f = tmp_path / "passwd"
    f.write_text("root:x:0:0\n")
    env = {"LLMCLI_DATA_DIR": str(f)}
    bad.run("chat", "--list", env=env, expect=1, message="not a folder")
    bad.run("chat", "-m", str(gguf_path), input="Hi\n", env=env, expect=1, message="sessions folder")
    assert f.read_text() == "root:x:0:0\n"


def test_unwritable_data_dir(bad, gguf_path, tmp_path):
    prefix: tuple[str, ...] = ()
    if os.geteuid() == 0:  # root ignores chmod: drop that capability, as test_store_registry does
        if shutil.which("setpriv") is None:
            pytest.skip("running as root and setpriv is missing: chmod 555 cannot be provoked")
        prefix = ("setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--")
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o555)
    try:
        bad.run("chat", "-m", str(gguf_path), input="Hi\n", env={"LLMCLI_DATA_DIR": str(d)}, expect=1,
                message="Permission denied", prefix=prefix)
        bad.run("chat", "--list", env={"LLMCLI_DATA_DIR": str(d)}, expect=0, prefix=prefix)  # nothing to write
    finally:
        d.chmod(0o755)


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs sysfs, where nobody may create folders")
def test_data_dir_where_no_folder_can_be_made(bad, gguf_path):
    bad.run("chat", "-m", str(gguf_path), input="Hi\n", env={"LLMCLI_DATA_DIR": "/sys/llmcli-test-data"}, expect=1,
            message="cannot create the sessions folder")


def test_failed_first_message_leaves_no_session_to_continue(bad, gguf_path, isolated_dirs):
    # the message cannot fit a 256-token window: it fails before any reply
    bad.run("chat", "-m", str(gguf_path), "--ctx", "256", input="word " * 400 + "\n", expect=1,
            message="does not fit")
    assert not list((isolated_dirs / "data" / "sessions").glob("*.json"))
    bad.run("chat", "--continue", "-m", str(gguf_path), input="Hi\n", expect=2, message="no saved conversation")


# --- stdout closed, full, or a pipe whose reader left -------------------------------------------

@pytest.mark.parametrize("where,needle", [("closed", "stdout is closed"), ("full", "No space left")])
@pytest.mark.parametrize("cmd", ["generate", "tokenize"])
def test_stdout_that_cannot_be_written(bad, gguf_path, where, needle, cmd):
    args = ("generate", "--max-tokens", "4") if cmd == "generate" else ("tokenize", "--pieces")
    bad.run(*args, "-m", str(gguf_path), "Hello", stdout=where, expect=1, message=f"cannot write output: {needle}")


def test_full_stdout_stops_a_piped_chat_at_once(bad, gguf_path):
    bad.run(*chat(gguf_path), input="Hi\nAgain\nAnd again\n", stdout="full", expect=1,
            message="cannot write output: No space left")


def _run_into_closed_pipe(*args: str, input: bytes = b"") -> subprocess.CompletedProcess:
    """stdout is a pipe whose read end is already closed: the first write gets EPIPE."""
    r, w = os.pipe()
    os.close(r)
    try:
        return subprocess.run([sys.executable, "-m", "llmcli", *args], input=input, stdout=w,
                              stderr=subprocess.PIPE, timeout=300)
    finally:
        os.close(w)


@pytest.mark.parametrize("args", [
    ("generate", "--max-tokens", "16", "Tell me a story."),
    ("generate", "--max-tokens", "4", "--jsonl", "--n", "3", "Hi"),
    ("tokenize", "--pieces", "Hello world " * 50),
])
def test_closed_pipe_exits_0_quietly(gguf_path, args):
    p = _run_into_closed_pipe(args[0], "-m", str(gguf_path), *args[1:])
    assert p.returncode == 0 and p.stderr == b"", p.stderr.decode()


def test_closed_pipe_in_piped_chat(gguf_path):
    p = _run_into_closed_pipe(*chat(gguf_path), input=b"Hi\nAgain\n")
    assert p.returncode == 0 and p.stderr == b"", p.stderr.decode()


def test_real_head_under_pipefail(gguf_path):
    script = (f'set -o pipefail; "{sys.executable}" -m llmcli tokenize -m "{gguf_path}" --pieces '
              f'"$(seq 1 20000)" | head -1 >/dev/null; echo "status=$?"')
    p = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=300)
    assert p.stdout.strip() == "status=0" and p.stderr == "", p.stderr


# --- hostile chat templates ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def template_gguf(gguf_path, tmp_path_factory):
    """A copy of the test GGUF whose chat template ``set(source)`` rewrites in place (padded with a
    Jinja comment to the original byte length, so every offset in the file stays valid)."""
    import gguf

    field = gguf.GGUFReader(str(gguf_path)).fields["tokenizer.chat_template"]
    original = bytes(field.parts[field.data[0]])
    path = tmp_path_factory.mktemp("tpl") / "hostile.gguf"
    shutil.copyfile(gguf_path, path)
    offset = path.read_bytes().index(original)

    def set_template(source: str) -> Path:
        raw = source.encode()
        pad = len(original) - len(raw) - 4
        assert pad >= 0, "template too long for the in-place patch"
        with open(path, "r+b") as f:
            f.seek(offset)
            f.write(raw + b"{#" + b"x" * pad + b"#}")
        return path

    return set_template


@pytest.mark.parametrize("source,needle", [
    ("{% include '/etc/passwd' %}", "load another template"),
    ("{% extends '/etc/passwd' %}", "load another template"),
    ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "recurses too deeply"),
    ("{{ 1/0 }}", "ZeroDivisionError"),
    ("{{ messages.__class__.__mro__[1].__subclasses__() }}", "unsafe"),
    ("{{ 'x' * 10**9 }}", "limit is"),
    ("{{ 'a'|center(10**9) }}", "limit is"),
    ("{% bogus %}", "does not compile"),
])
def test_hostile_template_in_generate(bad, template_gguf, source, needle):
    path = template_gguf(source)
    r = bad.run("generate", "-m", str(path), "--max-tokens", "2", "Hi", expect=1, message=needle)
    assert "the model's chat template failed" in r.stderr and "--raw" in r.stderr


def test_runaway_template_hits_the_time_budget(bad, template_gguf):
    path = template_gguf("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}")
    bad.run("generate", "-m", str(path), "--max-tokens", "2", "Hi", expect=1, timeout=120,
            message="rendering took longer than")


def test_hostile_template_in_chat(bad, template_gguf):
    path = template_gguf("{{ 1/0 }}")
    bad.run("chat", "-m", str(path), "--no-save", input="Hi\n", expect=1, message="the model's chat template failed")


# --- perplexity on binary input -----------------------------------------------------------------

def test_perplexity_rejects_binary_input(bad, gguf_path):
    blob = bad.work / "blob.bin"
    blob.write_bytes(bytes(range(256)) * 800)  # 200 KB
    bad.run("perplexity", "-m", str(gguf_path), "blob.bin", expect=2, message="binary data")
    bad.run("perplexity", "-m", str(gguf_path), input=blob.read_bytes(), expect=2, message="binary data")


# --- a read-only registry is left alone (decision: llmcli honours a missing write bit) ----------

def test_read_only_registry_is_left_alone(bad, gguf_path, isolated_dirs):
    from conftest import run_cli

    run_cli("models", "import", str(gguf_path), "--as", "smol", check=True)
    reg = isolated_dirs / "data" / "registry.json"
    reg.chmod(0o444)
    before = reg.read_bytes()
    bad.run("models", "alias", "tiny", "smol", expect=1, message="cannot write the model registry")
    r = bad.run("generate", "-m", "smol", "--max-tokens", "2", "Hi", expect=0, stdout_ok=True)
    assert r.stdout.strip()  # the model still runs; only its "last used" time is not recorded
    assert reg.read_bytes() == before and stat.S_IMODE(reg.stat().st_mode) == 0o444
