"""Bad input: one line on stderr, the right exit code, never a traceback."""

from __future__ import annotations

import pytest

from conftest import run_cli


def assert_one_line_error(r, code, *needles):
    assert r.returncode == code, (r.returncode, r.stderr)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in r.stderr
    for n in needles:
        assert n in lines[0]
    assert r.stdout == ""


def test_missing_model_path(tmp_path):
    assert_one_line_error(run_cli("generate", "-m", str(tmp_path / "nope.gguf"), "hi"), 1, "not found")


def test_directory_that_is_not_a_model(tmp_path):
    assert_one_line_error(run_cli("generate", "-m", str(tmp_path), "hi"), 1, "not a model folder")


def test_truncated_gguf(gguf_path, tmp_path):
    bad = tmp_path / "truncated.gguf"
    with gguf_path.open("rb") as f:
        bad.write_bytes(f.read(2_000_000))
    assert_one_line_error(run_cli("generate", "-m", str(bad), "hi"), 1, "truncated")


def test_text_file_named_gguf(tmp_path):
    bad = tmp_path / "notes.gguf"
    bad.write_text("just some text\n")
    assert_one_line_error(run_cli("generate", "-m", str(bad), "hi"), 1, "not a GGUF")


@pytest.mark.parametrize("args,needle", [
    (["--temperature", "-1"], "--temperature"),
    (["--top-p", "1.5"], "--top-p"),
    (["--n", "0"], "--n"),
    (["--max-tokens", "0"], "--max-tokens"),
    (["--think", "loud"], "--think"),
    (["--ctx", "-5"], "--ctx"),
])
def test_invalid_values_are_usage_errors(gguf_path, args, needle):
    assert_one_line_error(run_cli("generate", "-m", str(gguf_path), *args, "hi"), 2, needle)


def test_empty_prompt(gguf_path):
    assert_one_line_error(run_cli("generate", "-m", str(gguf_path), ""), 2, "empty prompt")
    assert_one_line_error(run_cli("generate", "-m", str(gguf_path), input="  \n"), 2, "empty prompt")


def test_unknown_flag():
    assert_one_line_error(run_cli("generate", "--bogus", "hi"), 2, "--bogus")


def test_prompt_longer_than_window(gguf_path):
    # 256 is the smallest --ctx (llama.cpp's smallest window); overflow it.
    r = run_cli("generate", "-m", str(gguf_path), "--ctx", "256", input="word " * 600)
    assert_one_line_error(r, 2, "context window is")
    assert any(ch.isdigit() for ch in r.stderr.split("tokens")[0])  # names the prompt's size too


def test_invalid_utf8_on_stdin_is_replaced_with_a_warning(gguf_path):
    r = run_cli("generate", "-m", str(gguf_path), "--temperature", "0", "--max-tokens", "3",
                input=b"caf\xe9 au lait")
    assert r.returncode == 0
    assert "not valid UTF-8" in r.stderr and "Traceback" not in r.stderr
    assert r.stdout.strip()


def test_bad_config_file(gguf_path, isolated_dirs):
    cfg = isolated_dirs / "config"
    cfg.mkdir(parents=True, exist_ok=True)
    (cfg / "config.toml").write_text("[sampling]\ntemprature = 0.2\n")
    assert_one_line_error(run_cli("generate", "-m", str(gguf_path), "hi"), 2, "temprature")


def test_verbose_shows_traceback_for_errors(tmp_path):
    r = run_cli("generate", "-v", "-m", str(tmp_path / "missing.gguf"), "hi")
    assert r.returncode == 1 and "Traceback" in r.stderr


def test_help_does_not_import_heavy_libraries():
    import subprocess
    import sys

    code = ("import sys; sys.argv=['llmcli','--help']\n"
            "from llmcli.cli.app import app\n"
            "try:\n    app(standalone_mode=False)\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch','transformers','llama_cpp','huggingface_hub','numpy','openai') if m in sys.modules]\n"
            "print('HEAVY=' + ','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "HEAVY="
