"""Shell completion of a model name (``llmcli generate -m <TAB>``) answered before Typer is imported.

Completing runs a whole ``llmcli`` process per key press. Importing Typer and building every
command's Click tree costs more than the rest of the process together, so the one completion
that needs neither — the value of ``-m``/``--model`` right after the flag — is answered here,
from the registry alone, in Typer's output format for each shell. Everything else (commands,
options, other values, any case this module is not sure of) goes to Typer as before.
tests/test_completion.py checks ``MODEL_COMMANDS`` against the Typer app and compares this
module's output with Typer's for every shell.
"""

from __future__ import annotations

import os
import sys

MODEL_FLAGS = frozenset({"-m", "--model"})
# The commands whose -m/--model completes store names (the parameter table's "model" row).
MODEL_COMMANDS = frozenset({"bench", "chat", "detokenize", "finetune", "generate", "perplexity", "tokenize"})
VAR = "_LLMCLI_COMPLETE"


def complete_model(incomplete: str) -> list[str]:
    """Store names and aliases, then .gguf files and folders under the typed path. Reads only the
    registry (no model library is imported); a damaged or missing registry completes nothing rather
    than printing an error into the user's prompt."""
    from llmcli.errors import LlmcliError

    out: list[str] = []
    try:
        from llmcli.store.modelstore import ModelStore

        reg = ModelStore().snapshot()
        out = sorted(n for n in {*reg.models, *reg.aliases} if n.startswith(incomplete))
    except (LlmcliError, OSError):
        pass
    folder, _, stem = incomplete.rpartition("/")
    if folder or incomplete.startswith((".", "~")):
        base = os.path.expanduser(folder or ".") if folder or incomplete.startswith("~") else "."
        try:
            with os.scandir(base or "/") as entries:
                for e in entries:
                    if e.name.startswith(stem) and (e.is_dir() or e.name.lower().endswith(".gguf")):
                        out.append(f"{folder}/{e.name}" if folder else e.name)
        except OSError:
            pass
    return out


def _split(string: str) -> list[str]:
    """Click's ``split_arg_string``: shell words, a missing closing quote tolerated."""
    import shlex

    lex = shlex.shlex(string, posix=True)
    lex.whitespace_split = True
    lex.commenters = ""
    out: list[str] = []
    try:
        out.extend(lex)
    except ValueError:
        out.append(lex.token)
    return out


def _words(shell: str, env) -> tuple[list[str], str] | None:
    """(the complete words after ``llmcli``, the word being completed), as Typer reads them."""
    if shell == "bash":
        words = _split(env.get("COMP_WORDS", ""))
        try:
            cword = int(env.get("COMP_CWORD", ""))
        except ValueError:
            return None
        return words[1:cword], (words[cword] if cword < len(words) else "")
    line = env.get("_TYPER_COMPLETE_ARGS", "")
    args = _split(line)[1:]
    if args and not line.endswith(" "):
        return args[:-1], args[-1]
    return args, ""


def _is_model_value(args: list[str]) -> bool:
    """Only the sure case: ``llmcli COMMAND … -m`` where the word before the flag is not an option
    (which might take ``-m`` as its own value)."""
    return (len(args) >= 2 and args[0] in MODEL_COMMANDS and args[-1] in MODEL_FLAGS and "--" not in args
            and (len(args) == 2 or not args[-2].startswith("-")))


def _zsh_escape(s: str) -> str:
    return s.replace('"', '""').replace("'", "''").replace("$", "\\$").replace("`", "\\`").replace(":", r"\\:")


def answer(env=os.environ) -> tuple[str | None, int] | None:
    """(what Typer would print — None: nothing —, exit status) for a model-name completion;
    None: let Typer answer."""
    instruction, _, shell = env.get(VAR, "").partition("_")
    if instruction != "complete" or shell not in ("bash", "zsh", "fish"):
        return None
    words = _words(shell, env)
    if words is None or not _is_model_value(words[0]):
        return None
    values = complete_model(words[1])
    if shell == "bash":
        return "\n".join(values), 0
    if shell == "zsh":
        if not values:
            return "_files", 0
        return "_arguments '*: :((" + "\n".join(f'"{_zsh_escape(v)}"' for v in values) + "))'", 0
    action = env.get("_TYPER_COMPLETE_FISH_ACTION", "")
    if action == "is-args":
        return None, (0 if values else 1)  # Typer exits without printing: 0 = complete these, 1 = files
    return ("\n".join(values) if action == "get-args" and values else ""), 0


def main() -> None:
    """The console entry point: a model-name completion here, everything else through the Typer app."""
    if VAR in os.environ:
        try:
            done = answer()
        except Exception:  # noqa: BLE001 - never an error in the user's prompt: Typer decides instead
            done = None
        if done is not None:
            text, status = done
            if text is not None:
                sys.stdout.write(text + "\n")
            sys.exit(status)
    from llmcli.cli.app import main as app_main

    app_main()
