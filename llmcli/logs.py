"""The run log: every ``generate`` sample and ``chat`` turn in one SQLite database.

Writing a record must never cost the user anything visible: it happens after the answer is
printed, takes a few milliseconds, and any failure (a locked, corrupt or unwritable database) is
one warning line on stderr, never an error. Concurrent llmcli processes each append in their own
short ``BEGIN IMMEDIATE`` transaction; WAL mode lets readers and one writer proceed together, and
a short busy timeout plus a retry lets writers queue instead of losing a record.

Search uses an FTS5 index over prompts and answers when the SQLite build has FTS5 (CPython's
bundled SQLite does); without it, ``search`` falls back to a case-insensitive ``LIKE`` scan.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from llmcli.errors import UsageError

DB_NAME = "logs.db"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 250  # per attempt; a locked database costs the run at most ATTEMPTS × this
ATTEMPTS = 4
DEFAULT_MAX_MB = 100.0
COLUMNS = ("time", "command", "model", "model_sha256", "backend", "prompt", "system", "files", "params", "seed",
           "prompt_tokens", "completion_tokens", "timings", "finish_reason", "output", "thinking", "error",
           "conversation", "sample")
JSON_COLUMNS = ("files", "params", "timings")

# Statements run one by one inside the creating transaction (executescript would commit it).
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time TEXT NOT NULL, command TEXT NOT NULL, model TEXT, model_sha256 TEXT, backend TEXT,
    prompt TEXT, system TEXT, files TEXT, params TEXT, seed INTEGER,
    prompt_tokens INTEGER, completion_tokens INTEGER, timings TEXT, finish_reason TEXT,
    output TEXT, thinking TEXT, error TEXT, conversation TEXT, sample INTEGER)""",
    "CREATE INDEX IF NOT EXISTS runs_time ON runs(time)",
)
_FTS = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS runs_fts USING fts5(prompt, output, content='runs', content_rowid='id')",
    """CREATE TRIGGER IF NOT EXISTS runs_ai AFTER INSERT ON runs BEGIN
  INSERT INTO runs_fts(rowid, prompt, output) VALUES (new.id, new.prompt, new.output);
END""",
    """CREATE TRIGGER IF NOT EXISTS runs_ad AFTER DELETE ON runs BEGIN
  INSERT INTO runs_fts(runs_fts, rowid, prompt, output) VALUES ('delete', old.id, old.prompt, old.output);
END""",
)


@dataclass
class Run:
    """One record: a generated sample or a chat turn (or a run that failed, with ``error``)."""

    command: str
    prompt: str | None = None
    model: str | None = None
    model_sha256: str | None = None
    backend: str | None = None
    system: str | None = None
    files: list = field(default_factory=list)  # [{"name": …, "sha256": …}] of files put into the prompt
    params: dict = field(default_factory=dict)
    seed: int | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    timings: dict = field(default_factory=dict)
    finish_reason: str | None = None
    output: str | None = None
    thinking: str | None = None
    error: str | None = None
    conversation: str | None = None  # chat: the saved conversation's name
    sample: int | None = None  # generate --n: the sample's index
    time: str = ""

    def row(self) -> tuple:
        values = {c: getattr(self, c) for c in COLUMNS}
        values["time"] = self.time or datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        values["model"] = safe_model_ref(self.model)
        for c in JSON_COLUMNS:
            values[c] = json.dumps(values[c], ensure_ascii=False, default=str)
        return tuple(values[c] for c in COLUMNS)


def db_path() -> Path:
    from llmcli.config import data_dir

    return data_dir() / DB_NAME


def safe_model_ref(model: str | None) -> str | None:
    """A model reference with any credentials removed: ``user:password@`` and query parameters
    that look like keys, so a key typed into a URL never reaches the log."""
    if not model or "://" not in model:
        return model
    try:
        parts = urlsplit(model)
        host = parts.hostname or ""
        netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    except ValueError:
        return "<unparsable URL>"
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                       if not any(w in k.lower() for w in ("key", "token", "secret", "pass", "auth", "sig"))])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _has_fts5(con: sqlite3.Connection) -> bool:
    return any(row[0] == "ENABLE_FTS5" for row in con.execute("PRAGMA compile_options"))


def connect(path: Path | None = None, *, create: bool = True) -> sqlite3.Connection:
    """A connection with the schema in place (created on first use, in WAL mode)."""
    path = path or db_path()
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
    elif not path.exists():
        raise FileNotFoundError(path)
    con = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    try:
        if con.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
            _create(con)
        con.execute("PRAGMA synchronous=NORMAL")  # WAL: a commit survives a crash of the process
    except BaseException:
        con.close()
        raise
    return con


def _create(con: sqlite3.Connection) -> None:
    # auto_vacuum must be set before the first table exists: pruning then gives pages back to the OS.
    con.execute("PRAGMA auto_vacuum=INCREMENTAL")
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("BEGIN IMMEDIATE")
    try:
        if con.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:  # another process may have won
            for statement in _SCHEMA + (_FTS if _has_fts5(con) else ()):
                con.execute(statement)
            con.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        con.execute("COMMIT")
    except BaseException:
        if con.in_transaction:
            con.execute("ROLLBACK")
        raise


def append(runs: list[Run], *, max_mb: float = DEFAULT_MAX_MB, path: Path | None = None) -> list[int]:
    """Insert the runs in one transaction, then prune the oldest beyond ``max_mb``. Raises sqlite3
    and OS errors: ``record`` is the caller that turns them into a warning."""
    placeholders = ",".join("?" * len(COLUMNS))
    last_error: Exception | None = None
    for attempt in range(ATTEMPTS):
        try:
            con = connect(path)
            try:
                con.execute("BEGIN IMMEDIATE")
                ids = [con.execute(f"INSERT INTO runs ({','.join(COLUMNS)}) VALUES ({placeholders})",
                                   r.row()).lastrowid for r in runs]
                con.execute("COMMIT")
                _prune_to(con, max_mb)
                return ids
            finally:
                con.close()
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) and "busy" not in str(e):
                raise
            last_error = e
            time.sleep(0.01 * (attempt + 1))
    raise last_error  # type: ignore[misc]


def record(runs: list[Run], *, max_mb: float = DEFAULT_MAX_MB, warn=None) -> None:
    """Append runs to the log; never raises. A failure is one line through ``warn``."""
    if not runs:
        return
    try:
        append(runs, max_mb=max_mb)
    except (sqlite3.Error, OSError) as e:
        if warn is not None:
            warn(f"the run was not logged: {describe(e)} ({db_path()}; `llmcli logs` explains, --no-log skips)")


def describe(e: Exception) -> str:
    text = str(e) or type(e).__name__
    if isinstance(e, sqlite3.DatabaseError) and ("not a database" in text or "malformed" in text):
        return f"the log database is damaged ({text}); move it away to start a new one"
    return text


def _prune_to(con: sqlite3.Connection, max_mb: float) -> int:
    """Delete the oldest runs while the database holds more than ``max_mb`` of live pages."""
    limit = int(max_mb * 1024 * 1024)
    page = con.execute("PRAGMA page_size").fetchone()[0]
    removed = 0
    while True:
        used = (con.execute("PRAGMA page_count").fetchone()[0] - con.execute("PRAGMA freelist_count").fetchone()[0])
        if used * page <= limit:
            break
        count = con.execute("SELECT count(*) FROM runs").fetchone()[0]
        if count == 0:
            break
        batch = max(1, count // 10)
        con.execute("BEGIN IMMEDIATE")
        removed += con.execute("DELETE FROM runs WHERE id IN (SELECT id FROM runs ORDER BY id LIMIT ?)",
                               (batch,)).rowcount
        con.execute("COMMIT")
    if removed:
        con.execute("PRAGMA incremental_vacuum")
    return removed


# ------------------------------------------------------------------ reading (llmcli logs …)

def _open_for_reading() -> sqlite3.Connection | None:
    from llmcli.errors import LlmcliError

    path = db_path()
    if not path.exists():
        return None
    try:
        return connect(path, create=False)
    except sqlite3.Error as e:
        raise LlmcliError(f"cannot read the run log {path}: {describe(e)}",
                          "move the file away; the next run starts a new log") from None


def _rows(con: sqlite3.Connection, sql: str, args=()) -> list[dict]:
    cur = con.execute(sql, args)
    names = [d[0] for d in cur.description]
    out = []
    for row in cur.fetchall():
        d = dict(zip(names, row))
        for c in JSON_COLUMNS:
            if d.get(c) is not None:
                d[c] = json.loads(d[c])
        out.append(d)
    return out


def _query(sql: str, args=()) -> list[dict]:
    from llmcli.errors import LlmcliError

    con = _open_for_reading()
    if con is None:
        return []
    try:
        return _rows(con, sql, args)
    except sqlite3.Error as e:
        raise LlmcliError(f"cannot read the run log {db_path()}: {describe(e)}",
                          "move the file away; the next run starts a new log") from None
    finally:
        con.close()


def recent(limit: int) -> list[dict]:
    """The newest ``limit`` runs, oldest first (as a terminal reads them)."""
    rows = _query("SELECT * FROM runs ORDER BY id DESC LIMIT ?", (limit,))
    return rows[::-1]


def get(run_id: int) -> dict | None:
    rows = _query("SELECT * FROM runs WHERE id = ?", (run_id,))
    return rows[0] if rows else None


def search(text: str, limit: int) -> list[dict]:
    """Runs whose prompt or answer matches ``text``: FTS5 words (every word must occur, in any
    order, prefix-free) when available, else a case-insensitive substring."""
    con = _open_for_reading()
    if con is None:
        return []
    try:
        if con.execute("SELECT 1 FROM sqlite_master WHERE name='runs_fts'").fetchone():
            words = [w for w in text.split() if w]
            query = " ".join('"' + w.replace('"', '""') + '"' for w in words)
            rows = _rows(con, "SELECT runs.* FROM runs_fts JOIN runs ON runs.id = runs_fts.rowid "
                              "WHERE runs_fts MATCH ? ORDER BY runs.id DESC LIMIT ?", (query, limit))
        else:
            like = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            rows = _rows(con, "SELECT * FROM runs WHERE prompt LIKE ? ESCAPE '\\' OR output LIKE ? ESCAPE '\\' "
                              "ORDER BY id DESC LIMIT ?", (like, like, limit))
    except sqlite3.Error as e:
        from llmcli.errors import LlmcliError

        raise LlmcliError(f"cannot search the run log {db_path()}: {describe(e)}") from None
    finally:
        con.close()
    return rows[::-1]


def remove(ids: list[int] | None = None, before: str | None = None) -> int:
    """Delete runs by id, or every run older than ``before`` (an ISO date or time, UTC)."""
    con = _open_for_reading()
    if con is None:
        return 0
    try:
        con.execute("BEGIN IMMEDIATE")
        if ids:
            n = sum(con.execute("DELETE FROM runs WHERE id = ?", (i,)).rowcount for i in ids)
        else:
            n = con.execute("DELETE FROM runs WHERE time < ?", (before,)).rowcount
        con.execute("COMMIT")
        con.execute("PRAGMA incremental_vacuum")
        return n
    except sqlite3.Error as e:
        from llmcli.errors import LlmcliError

        raise LlmcliError(f"cannot change the run log {db_path()}: {describe(e)}",
                          "another llmcli may be writing; try again") from None
    finally:
        con.close()


def parse_before(text: str) -> str:
    """``--before 2026-11-01`` or ``2026-11-01T12:00`` (UTC) -> the stored time format's prefix."""
    for fmt in ("%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"):
        try:
            return datetime.strptime(text.strip(), fmt).strftime("%Y-%m-%dT%H:%M:%S")
        except ValueError:
            continue
    raise UsageError(f"invalid --before {text!r}: not a date", "write YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC)")


def file_entry(name: str, data: bytes) -> dict:
    """What the log keeps of a file put into a prompt: its name and the sha256 of its bytes."""
    import hashlib

    return {"name": name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def enabled(settings) -> bool:
    return bool(settings.general.get("log", True))


def max_mb(settings) -> float:
    return float(settings.general.get("log_max_mb", DEFAULT_MAX_MB))


def model_sha256(ref) -> str | None:
    """The store's recorded sha256 for the model file, when it came from the store; never hashes."""
    rec = getattr(ref, "extra", {}).get("record")
    if rec is None or ref.path is None:
        return None
    target = os.path.abspath(str(ref.path))
    for f in rec.files:
        if os.path.abspath(f.path) == target:
            return f.sha256
    return None
