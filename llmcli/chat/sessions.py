"""Saved conversations: writes by llmcli's no-clobber rules, loading with clear errors, listing,
and the autosave location ``<data dir>/sessions/<name>.json``.

A corrupt file is reported with its path and reason and is never overwritten: every write
(autosave, ``/save``) replaces only a file that is a saved llmcli conversation, unless forced
(``/save!``), and ``/export`` replaces only an earlier transcript (its first line is
``EXPORT_MARKER``). Symlinks, folders, devices and FIFOs are never written (see ``llmcli.fileio``).
"""

from __future__ import annotations

import datetime
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from llmcli.chat.conversation import FORMAT, Conversation
from llmcli.errors import LlmcliError, UsageError
from llmcli.fileio import FileKind, atomic_write_bytes, write_user_file

SUFFIX = ".json"
MAX_NAME = 100
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
EXPORT_MARKER = "<!-- llmcli chat transcript -->"


class SessionError(LlmcliError):
    """A conversation file cannot be read or written."""


def _is_saved_conversation(data: bytes) -> bool:
    try:
        d = json.loads(data)
    except ValueError:
        return False
    return isinstance(d, dict) and d.get("format") == FORMAT


SESSION = FileKind("saved conversation", _is_saved_conversation, "/save! PATH replaces it")
TRANSCRIPT = FileKind("chat transcript", lambda data: data.startswith(EXPORT_MARKER.encode()),
                      "/export! PATH replaces it")


def sessions_dir() -> Path:
    from llmcli.config import data_dir

    return data_dir() / "sessions"


def history_path() -> Path:
    """The REPL's input history (prompt_toolkit FileHistory)."""
    from llmcli.config import data_dir

    return data_dir() / "chat_history"


def is_name(arg: str) -> bool:
    """``trip`` is a session name (in the sessions dir); ``trip.json``, ``./trip`` or ``a/b`` are paths."""
    return (len(arg) <= MAX_NAME and "/" not in arg and os.sep not in arg and not arg.endswith(SUFFIX)
            and bool(_NAME_RE.match(arg)))


def is_path(arg: str) -> bool:
    """An explicit file path: it names a folder (``./x``, ``a/b``, ``~/x``) or ends with ``.json``."""
    return "/" in arg or os.sep in arg or arg.startswith("~") or arg.endswith(SUFFIX)


def target_path(arg: str) -> Path:
    """Where ``--session``, ``/save`` and ``/load`` read or write for ARG. Anything that is neither
    a session name nor an explicit path (``a b``, a newline, ``-x``) is a usage error: such a string
    would otherwise become an odd file in the current folder."""
    arg = arg.strip()
    if not arg:
        raise UsageError("a session name or file path is needed")
    if is_name(arg):
        return sessions_dir() / f"{arg}{SUFFIX}"
    shown = arg if arg.isprintable() else repr(arg)
    if not arg.isprintable():
        raise UsageError(f"invalid session name or path {shown}: it contains control characters",
                         "use letters, digits, '.', '_' and '-'")
    if not is_path(arg):
        raise UsageError(f"invalid session name {shown!r}",
                         f"a name has up to {MAX_NAME} letters, digits, '.', '_' and '-' (starting with a letter "
                         "or digit); a file path must contain '/' or end with .json")
    return Path(arg).expanduser()


def in_sessions_dir(path: Path) -> bool:
    try:
        return path.parent.resolve() == sessions_dir().resolve()
    except OSError:
        return False


def ensure_sessions_dir() -> Path:
    """Create the sessions folder (llmcli's own) or say clearly why it cannot be written."""
    d = sessions_dir()
    try:
        d.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise SessionError(f"cannot create the sessions folder {d}: a part of its path is a file, not a folder",
                           "set LLMCLI_DATA_DIR to a folder, or use --no-save") from None
    except OSError as e:
        raise SessionError(f"cannot create the sessions folder {d}: {e.strerror or e}",
                           "set LLMCLI_DATA_DIR to a writable folder, or use --no-save") from None
    if not os.access(d, os.W_OK | os.X_OK):
        raise SessionError(f"cannot write in the sessions folder {d}: Permission denied",
                           "set LLMCLI_DATA_DIR to a writable folder, or use --no-save")
    return d


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


def check_writable(path: Path) -> None:
    """Before a chat starts: can its autosave file be written at all? (The sessions folder is
    created; a folder the user named must already exist.)"""
    if in_sessions_dir(path):
        ensure_sessions_dir()
    elif not path.parent.is_dir():
        raise SessionError(f"cannot save the conversation to {path}: the folder {path.parent} does not exist",
                           "create the folder first, or use --no-save")


def atomic_write(path: Path, text: str) -> None:
    """Atomically replace ``path`` (in llmcli's own folders) with ``text`` (see ``llmcli.fileio``)."""
    atomic_write_bytes(path, text.encode("utf-8"), what="the file")


def save(path: Path, conv: Conversation, *, force: bool = False) -> None:
    """Autosave and ``/save``: replaces only a saved conversation unless ``force``; creates only the
    sessions folder, never a folder the user named."""
    if in_sessions_dir(path):
        ensure_sessions_dir()
    write_user_file(path, conv.to_json(), force=force, kind=SESSION)


def export(path: Path, conv: Conversation, *, force: bool = False) -> None:
    """``/export``: a Markdown transcript whose first line marks it as ours (so a later export may
    replace it); any other existing file needs ``force``."""
    write_user_file(path, f"{EXPORT_MARKER}\n{conv.to_markdown()}", force=force, kind=TRANSCRIPT)


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


def _session_files() -> list[Path]:
    d = sessions_dir()
    try:
        return [p for p in d.iterdir() if p.suffix == SUFFIX and not p.name.startswith(".") and p.is_file()]
    except FileNotFoundError:
        return []
    except OSError as e:
        reason = "a part of its path is a file, not a folder" if isinstance(e, NotADirectoryError) else e.strerror
        raise SessionError(f"cannot read the sessions folder {d}: {reason or e}",
                           "set LLMCLI_DATA_DIR to a folder llmcli can use") from None


def latest() -> Path | None:
    """The most recently written session file (what ``--continue`` resumes)."""
    files = _session_files()
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
    files = _session_files()
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
    """Saves the conversation after every change to one file; ``path`` None disables saving.

    A file this process created is removed again when its conversation becomes empty (the first
    message failed, or was undone): ``--continue`` must never resume an empty conversation."""

    def __init__(self, path: Path | None, *, enabled: bool = True):
        self.path = path
        self.enabled = enabled
        self.created = False

    @property
    def name(self) -> str | None:
        return self.path.stem if self.path is not None else None

    def retarget(self, path: Path) -> None:
        self.path = path
        self.created = False

    def save(self, conv: Conversation) -> None:
        if not self.enabled or self.path is None:
            return
        if not conv.messages:
            if self.created:
                self._remove_own_file()
            if not os.path.lexists(self.path):
                return  # nothing worth a file yet
        existed = os.path.lexists(self.path)
        save(self.path, conv)
        self.created = self.created or not existed

    def _remove_own_file(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise SessionError(f"cannot remove the empty conversation file {self.path}: {e.strerror or e}") from None
        self.created = False
