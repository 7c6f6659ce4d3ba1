"""Shell completion (issue 15 item 4): Typer's completion protocol driven through its environment
variables, as the shell does, against a real llmcli subprocess and a real store."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from conftest import run_cli

HEAVY = ("torch", "transformers", "llama_cpp", "huggingface_hub", "numpy", "openai")


def complete(words: str, cword: int, shell: str = "bash") -> list[str]:
    """What the shell gets for COMP_WORDS/COMP_CWORD (bash) or _TYPER_COMPLETE_ARGS (zsh, fish)."""
    env = dict(os.environ, _LLMCLI_COMPLETE=f"complete_{shell}")
    if shell == "bash":
        env.update(COMP_WORDS=words, COMP_CWORD=str(cword))
    else:
        env.update(_TYPER_COMPLETE_ARGS=words, _TYPER_COMPLETE_FISH_ACTION="get-args")
    r = subprocess.run([sys.executable, "-m", "llmcli"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    return [line for line in r.stdout.splitlines() if line]  # no candidates: bash gets one empty line


@pytest.fixture
def store_with_models(gguf_path):
    run_cli("models", "import", str(gguf_path), "--as", "smol-q4", check=True)
    run_cli("models", "import", str(gguf_path.parent), "--as", "smolfolder", check=True)
    run_cli("models", "alias", "tiny", "smol-q4", check=True)


def test_commands_and_subcommands():
    assert complete("llmcli ge", 1) == ["generate"]
    top = complete("llmcli ", 1)
    for name in ("generate", "chat", "tokenize", "models", "pull", "logs"):
        assert name in top
    assert set(complete("llmcli logs ", 2)) >= {"search", "show", "rm"}
    assert complete("llmcli models al", 2) == ["alias"]


def test_flags():
    assert complete("llmcli generate --max", 2) == ["--max-tokens"]
    assert "--no-log" in complete("llmcli chat --no", 2)
    assert set(complete("llmcli --", 1)) >= {"--install-completion", "--show-completion", "--help", "--version"}


def test_model_names_and_aliases_from_the_store(store_with_models, tmp_path):
    assert complete("llmcli generate -m ", 3) == ["smol-q4", "smolfolder", "tiny"]
    assert complete("llmcli chat --model smol", 3) == ["smol-q4", "smolfolder"]
    assert complete("llmcli generate -m t", 3) == ["tiny"]
    # zsh and fish speak their own formats over the same callback
    assert '"tiny"' in "".join(complete("llmcli generate -m t", 0, shell="zsh"))
    assert complete("llmcli generate -m t", 0, shell="fish") == ["tiny"]
    # a path: .gguf files and folders, not other files
    (tmp_path / "a.gguf").write_bytes(b"GGUF")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "sub").mkdir()
    assert sorted(complete(f"llmcli generate -m {tmp_path}/", 3)) == [f"{tmp_path}/a.gguf", f"{tmp_path}/sub"]


def test_damaged_registry_completes_nothing_and_prints_nothing(isolated_dirs):
    from llmcli.store.registry import registry_path

    path = registry_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{not json")
    assert complete("llmcli generate -m ", 3) == []


def test_completion_imports_nothing_heavy(store_with_models):
    code = ("import os, sys\n"
            "os.environ.update(_LLMCLI_COMPLETE='complete_bash', COMP_WORDS='llmcli generate -m ', COMP_CWORD='3')\n"
            "sys.argv = ['llmcli']\n"
            "from llmcli.cli.app import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            f"print('HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["smol-q4", "smolfolder", "tiny", "HEAVY="]


def test_completion_latency_sanity_bound(store_with_models):
    # The ≤ 100 ms figure is measured in docs/performance.md (tests/bench_completion.py); this
    # bound only catches an accidental heavy import (torch alone takes seconds here).
    start = time.monotonic()
    complete("llmcli generate -m ", 3)
    assert time.monotonic() - start < 10


def test_show_and_install_completion(tmp_path):
    env = {"HOME": str(tmp_path), "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    shown = run_cli("--show-completion", "bash", env=env, check=True).stdout
    assert "_LLMCLI_COMPLETE=complete_bash" in shown and "complete -o default -F" in shown
    r = run_cli("--install-completion", "bash", env=env, check=True)
    assert "bash completion installed" in r.stdout
    script = tmp_path / ".bash_completions" / "llmcli.sh"
    assert "_LLMCLI_COMPLETE=complete_bash" in script.read_text()
    assert str(script) in (tmp_path / ".bashrc").read_text()
    for shell in ("zsh", "fish"):
        assert f"complete_{shell}" in run_cli("--show-completion", shell, env=env, check=True).stdout


# ---------------------------------------------------------------- the fast path (cli/fastcomplete.py)

TYPER_ONLY = "import sys\nfrom llmcli.cli.app import main\nsys.argv = ['llmcli']\nmain()\n"


def _env(shell: str, line: str, cword: int | None = None, action: str = "get-args") -> dict:
    env = dict(os.environ, _LLMCLI_COMPLETE=f"complete_{shell}")
    if shell == "bash":
        env.update(COMP_WORDS=line, COMP_CWORD=str(cword if cword is not None else len(line.split())))
    else:
        env.update(_TYPER_COMPLETE_ARGS=line, _TYPER_COMPLETE_FISH_ACTION=action)
    return env


@pytest.mark.parametrize("shell,line,action", [
    ("bash", "llmcli generate -m ", None), ("bash", "llmcli chat --model sm", None),
    ("bash", "llmcli generate --temperature 0 -m t", None), ("bash", "llmcli tokenize -m nothing-like-it", None),
    ("bash", "llmcli generate -m \"smol", None),
    ("zsh", "llmcli generate -m ", None), ("zsh", "llmcli perplexity --model smo", None),
    ("zsh", "llmcli generate -m zzz", None),  # nothing: zsh falls back to files
    ("fish", "llmcli generate -m ", "get-args"), ("fish", "llmcli chat -m t", "get-args"),
    ("fish", "llmcli generate -m ", "is-args"), ("fish", "llmcli generate -m zzz", "is-args"),
])
def test_fast_model_completion_answers_exactly_as_typer(store_with_models, shell, line, action):
    """The model-name completion is answered before Typer is imported; byte for byte and exit status
    for exit status what Typer itself answers for the same shell state."""
    cword = len(line.split()) if line.endswith(" ") else len(line.split()) - 1
    env = _env(shell, line, cword, action or "get-args")
    fast = subprocess.run([sys.executable, "-m", "llmcli"], env=env, capture_output=True, text=True, timeout=120)
    slow = subprocess.run([sys.executable, "-c", TYPER_ONLY], env=env, capture_output=True, text=True, timeout=120)
    assert (fast.stdout, fast.returncode, fast.stderr) == (slow.stdout, slow.returncode, slow.stderr)
    from llmcli.cli import fastcomplete

    assert fastcomplete.answer(env) is not None  # the fast path did answer, not Typer behind it


def test_fast_path_skips_typer_and_leaves_other_completions_to_it(store_with_models):
    code = ("import sys\nfrom llmcli.cli import fastcomplete\n"
            "try:\n    fastcomplete.main()\nexcept SystemExit:\n    pass\n"
            "print('typer' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], env=_env("bash", "llmcli generate -m ", 3),
                         capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["smol-q4", "smolfolder", "tiny", "False"]
    from llmcli.cli import fastcomplete

    for line, cword in (("llmcli ge", 1), ("llmcli generate --max", 2), ("llmcli generate --system -m ", 4),
                        ("llmcli models show ", 3), ("llmcli generate -- -m ", 4)):
        assert fastcomplete.answer(_env("bash", line, cword)) is None, line  # Typer answers these


def test_fast_path_knows_every_command_with_a_model_option():
    import typer.main

    from llmcli.cli.app import app
    from llmcli.cli.fastcomplete import MODEL_COMMANDS, MODEL_FLAGS

    def walk(cmd, path):
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from walk(sub, path + (name,))
        if any(set(p.opts) & MODEL_FLAGS for p in cmd.params):
            assert all(set(p.opts) == MODEL_FLAGS for p in cmd.params if set(p.opts) & MODEL_FLAGS), path
            yield " ".join(path)

    assert set(walk(typer.main.get_command(app), ())) == MODEL_COMMANDS
