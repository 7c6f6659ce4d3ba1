"""Saved conversations: atomic writes, loading with clear errors, listing, and the
autosave location ``<data dir>/sessions/<name>.json``.

A corrupt file is reported with its path and reason and is never overwritten: autosave
only ever writes to a file that this process created or loaded successfully.
"""

from __future__ import annotations

import datetime
import os
import re
from dataclasses import dataclass
from pathlib import Path

from llmcli.chat.conversation import Conversation
from llmcli.errors import LlmcliError, UsageError
from llmcli.fileio import atomic_write_bytes

SUFFIX = ".json"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class SessionError(LlmcliError):
    """A conversation file cannot be read or written."""


def sessions_dir() -> Path:
    from llmcli.config import data_dir

    return data_dir() / "sessions"


def history_path() -> Path:
    """The REPL's input history (prompt_toolkit FileHistory)."""
    from llmcli.config import data_dir

    return data_dir() / "chat_history"


def is_name(arg: str) -> bool:
    """``trip`` is a session name (in the sessions dir); ``trip.json``, ``./trip`` or ``a/b`` are paths."""
    return "/" not in arg and os.sep not in arg and not arg.endswith(SUFFIX) and bool(_NAME_RE.match(arg))


def target_path(arg: str) -> Path:
    """Where ``--session``, ``/save`` and ``/load`` read or write for ARG."""
    arg = arg.strip()
    if not arg:
        raise UsageError("a session name or file path is needed")
    if is_name(arg):
        return sessions_dir() / f"{arg}{SUFFIX}"
    return Path(arg).expanduser()


def in_sessions_dir(path: Path) -> bool:
    try:
        return path.resolve().parent == sessions_dir().resolve()
    except OSError:
        return False


def new_name(now: datetime.datetime | None = None) -> str:
    """A fresh session name from the local time: 20250102-153012 (-2, -3 … if taken)."""
    now = now or datetime.datetime.now()
    base = now.strftime("%Y%m%d-%H%M%S")
    d = sessions_dir()
    name, i = base, 1
    while (d / f"{name}{SUFFIX}").exists():
        i += 1
        name = f"{base}-{i}"
    return name


def atomic_write(path: Path, text: str) -> None:
    """Atomically replace ``path`` with ``text`` (see ``llmcli.fileio``)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def save(path: Path, conv: Conversation) -> None:
    try:
        atomic_write(path, conv.to_json())
    except OSError as e:
        raise SessionError(f"cannot save the conversation to {path}: {e.strerror or e}") from None


def load(path: Path) -> Conversation:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SessionError(f"no saved conversation at {path}", "llmcli chat --list shows the saved ones") from None
    except OSError as e:
        raise SessionError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8")
        return Conversation.from_json(text)
    except UnicodeDecodeError:
        reason = "not UTF-8 text"
    except ValueError as e:
        reason = str(e)
    raise SessionError(f"the conversation file {path} is corrupt: {reason}",
                       "fix or delete it; llmcli will not overwrite it")


def latest() -> Path | None:
    """The most recently written session file (what ``--continue`` resumes)."""
    d = sessions_dir()
    try:
        files = [p for p in d.iterdir() if p.suffix == SUFFIX and not p.name.startswith(".") and p.is_file()]
    except FileNotFoundError:
        return None
    if not files:
        return None
    return max(files, key=lambda p: (p.stat().st_mtime_ns, p.name))


@dataclass
class SessionInfo:
    name: str
    path: Path
    updated: str
    model: str
    messages: int
    preview: str
    error: str | None = None


def list_sessions() -> list[SessionInfo]:
    """Every file in the sessions dir, newest first; corrupt ones are listed with their error."""
    d = sessions_dir()
    try:
        files = [p for p in d.iterdir() if p.suffix == SUFFIX and not p.name.startswith(".") and p.is_file()]
    except FileNotFoundError:
        return []
    files.sort(key=lambda p: (p.stat().st_mtime_ns, p.name), reverse=True)
    out = []
    for p in files:
        mtime = datetime.datetime.fromtimestamp(p.stat().st_mtime).strftime("%Y-%m-%d %H:%M")
        try:
            conv = load(p)
        except SessionError as e:
            out.append(SessionInfo(p.stem, p, mtime, "", 0, "", error=e.message))
            continue
        first = next((m.content for m in conv.messages if m.role == "user"), "")
        preview = " ".join(first.split())
        if len(preview) > 50:
            preview = preview[:49] + "…"
        model = Path(conv.model).name if conv.model and "/" in conv.model else (conv.model or "")
        out.append(SessionInfo(p.stem, p, mtime, model, len(conv.messages), preview))
    return out


def format_list(infos: list[SessionInfo]) -> str:
    if not infos:
        return ""
    rows = [("NAME", "UPDATED", "MESSAGES", "MODEL", "FIRST MESSAGE")]
    for i in infos:
        if i.error:
            rows.append((i.name, i.updated, "-", "-", "(corrupt: fix or delete the file)"))
        else:
            rows.append((i.name, i.updated, str(i.messages), i.model, i.preview))
    widths = [max(len(r[c]) for r in rows) for c in range(4)]
    lines = ["  ".join(r[c].ljust(widths[c]) for c in range(4)) + "  " + r[4] for r in rows]
    return "\n".join(line.rstrip() for line in lines) + "\n"


class Autosaver:
    """Saves the conversation after every change to one file; ``path`` None disables saving."""

    def __init__(self, path: Path | None, *, enabled: bool = True):
        self.path = path
        self.enabled = enabled

    @property
    def name(self) -> str | None:
        return self.path.stem if self.path is not None else None

    def retarget(self, path: Path) -> None:
        self.path = path

    def save(self, conv: Conversation) -> None:
        if not self.enabled or self.path is None:
            return
        if not conv.messages and not self.path.exists():
            return  # nothing worth a file yet
        save(self.path, conv)
