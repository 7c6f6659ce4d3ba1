"""Slash commands: parsing, and dispatch onto a ChatSession returning what the loop does next.

A line starting with ``/`` is a command; ``//text`` sends ``/text`` as a message."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from llmcli.chat import sessions
from llmcli.errors import UsageError
from llmcli.params import SETTABLE


@dataclass(frozen=True)
class Command:
    name: str
    arg: str = ""


# name -> (usage, help); the order is the /help order.
COMMANDS: dict[str, tuple[str, str]] = {
    "help": ("/help", "this list"),
    "set": ("/set [NAME VALUE]", f"change a sampling parameter ({', '.join(SETTABLE)}); alone: list them"),
    "system": ("/system [TEXT]", "replace the system prompt; alone: show it; /system \"\" removes it"),
    "undo": ("/undo", "drop the last exchange"),
    "retry": ("/retry", "generate the last reply again"),
    "stats": ("/stats", "context used / window, last reply tokens/s and time to first token"),
    "context": ("/context", "tokens used / window and what would be dropped next"),
    "save": ("/save NAME|FILE.json", "save the conversation (a bare name goes to the sessions folder)"),
    "load": ("/load NAME|FILE.json", "load a saved conversation"),
    "export": ("/export FILE.md", "write a readable Markdown transcript"),
    "clear": ("/clear", "start a new conversation with the same model (the old one stays saved)"),
    "model": ("/model [NAME]", "switch to another model (a store name or a path); alone: show the current one"),
    "exit": ("/exit", "leave (also Ctrl-D)"),
}
ALIASES = {"quit": "exit", "bye": "exit", "q": "exit", "?": "help", "h": "help"}

HELP_FOOTER = [
    'Multi-line message: a line with """ starts it and a line ending with """ ends it; '
    "Alt-Enter (or Esc then Enter) inserts a newline.",
    "Ctrl-C stops a reply (the partial reply is kept, marked as interrupted); Ctrl-D exits.",
    "A message starting with / is sent by typing // instead.",
]


def parse(line: str) -> Command | str:
    """A Command for ``/name arg``; otherwise the message text (``//x`` becomes ``/x``)."""
    if line.startswith("//"):
        return line[1:]
    if line.startswith("/") and len(line) > 1 and not line[1].isspace():
        head, _, arg = line[1:].partition(" ")
        if "\n" in head:  # "/system\nmore": split at the first whitespace of any kind
            head, _, rest = head.partition("\n")
            arg = rest + (" " + arg if arg else "")
        name = head.lower()
        return Command(ALIASES.get(name, name), arg.strip())
    return line


def help_lines() -> list[str]:
    width = max(len(u) for u, _ in COMMANDS.values())
    return [f"{u.ljust(width)}  {h}" for u, h in COMMANDS.values()] + [""] + HELP_FOOTER


class Action(enum.Enum):
    CONTINUE = "continue"
    EXIT = "exit"
    RETRY = "retry"  # the loop generates the last reply again, with its own sink


@dataclass
class Outcome:
    action: Action = Action.CONTINUE
    lines: list[str] = field(default_factory=list)


def dispatch(cmd: Command, session) -> Outcome:
    """Run a command on a ChatSession. Raises LlmcliError for anything the user got wrong; the
    session is unchanged then."""
    name, arg = cmd.name, cmd.arg
    conv = session.conv
    if name == "help":
        return Outcome(lines=help_lines())
    if name == "exit":
        return Outcome(Action.EXIT)
    if name == "set":
        if not arg:
            return Outcome(lines=conv.param_lines())
        field_name, _, value = arg.partition(" ")
        session.set_param(field_name, value)
        key = field_name.strip().lower().replace("-", "_")
        shown = next((line for line in conv.param_lines() if line.startswith(key + " ")), key)
        return Outcome(lines=[f"set {shown}"])
    if name == "system":
        if not arg:
            return Outcome(lines=[f"system prompt: {conv.system}" if conv.system else
                                  "no system prompt (the model's template may add its own default)"])
        text = None if arg in ('""', "''") else arg
        session.set_system(text)
        return Outcome(lines=["system prompt replaced" if text else "system prompt removed"])
    if name == "undo":
        if not session.undo():
            return Outcome(lines=["nothing to undo"])
        return Outcome(lines=[f"dropped the last exchange ({conv.exchanges} left)"])
    if name == "retry":
        if not conv.messages:
            raise UsageError("nothing to retry yet", "send a message first")
        return Outcome(Action.RETRY)
    if name == "stats":
        return Outcome(lines=session.stats_lines())
    if name == "context":
        return Outcome(lines=session.context_lines())
    if name == "save":
        path = sessions.target_path(_need(arg, "/save NAME or /save FILE.json"))
        session.wait_prefill()
        sessions.save(path, conv)
        return Outcome(lines=[f"saved to {path}"])
    if name == "load":
        path = sessions.target_path(_need(arg, "/load NAME or /load FILE.json"))
        new = sessions.load(path)
        saved_model = new.model
        # Keep saving into a session file; a file elsewhere is left as it is (saved again only by /save).
        target = path if sessions.in_sessions_dir(path) else sessions.sessions_dir() / (
            sessions.new_name() + sessions.SUFFIX)
        session.replace_conversation(new, target)
        lines = [f"loaded {path}: {new.exchanges} exchange(s)"]
        if saved_model and saved_model != conv.model:
            lines.append(f"it was saved with model {saved_model}; continuing with {session.conv.model} "
                         "(/model switches)")
        if new.pending:
            lines.append("the last message has no reply: /retry generates it, /undo drops it")
        return Outcome(lines=lines)
    if name == "export":
        from pathlib import Path

        path = Path(_need(arg, "/export FILE.md")).expanduser()
        try:
            sessions.atomic_write(path, conv.to_markdown())
        except OSError as e:
            raise sessions.SessionError(f"cannot write {path}: {e.strerror or e}") from None
        return Outcome(lines=[f"transcript written to {path}"])
    if name == "clear":
        target = None
        if session.autosaver.path is not None:
            target = sessions.sessions_dir() / (sessions.new_name() + sessions.SUFFIX)
        session.clear(target)
        return Outcome(lines=["new conversation"])
    if name == "model":
        if not arg:
            b = session.backend
            return Outcome(lines=[f"model: {conv.model} ({b.name}, {b.n_ctx}-token window)"])
        display = session.switch_model(arg)
        return Outcome(lines=[f"switched to {display} ({session.backend.name}, "
                              f"{session.backend.n_ctx}-token window); the conversation continues"])
    raise UsageError(f"unknown command /{name}", "type /help for the list (// sends a message starting with /)")


def _need(arg: str, usage: str) -> str:
    if not arg:
        raise UsageError(f"missing argument: {usage}")
    return arg
