"""Harness for the bad-input suite (issue 10): every hostile input is run as a real subprocess and
must end in a clean, one-line failure that changed no file outside the test's own llmcli folders.

Use the ``bad`` fixture (tests/conftest.py): ``bad.run(*args, expect=2, input=..., env=...)``
runs ``python -m llmcli`` with the working directory set to ``bad.work`` (a folder of
"user files" that is hashed before and after every run) and asserts:

- the exit status is ``expect`` (2 usage, 1 runtime, 130 Ctrl-C, 0 for a closed pipe);
- stderr holds exactly one non-blank line, starting with ``error:`` (unless ``expect == 0``),
  and no traceback;
- stdout is empty (unless ``stdout_ok=True``);
- no file, symlink or folder under ``bad.work`` changed (content, type, mode, link target),
  unless listed in ``may_change``.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


def snapshot(root: Path) -> dict[str, tuple]:
    """path -> (kind, mode, content hash or link target); never follows symlinks."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            st = p.lstat()
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", mode, os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", mode, "")
            elif stat.S_ISREG(st.st_mode):
                try:
                    digest = hashlib.sha256(p.read_bytes()).hexdigest()
                except PermissionError:
                    digest = f"unreadable:{st.st_size}:{st.st_mtime_ns}"
                out[rel] = ("file", mode, digest)
            else:
                out[rel] = ("special", mode, str(stat.S_IFMT(st.st_mode)))
    return out


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


class BadInput:
    def __init__(self, work: Path):
        self.work = work
        self.work.mkdir(parents=True, exist_ok=True)

    def run(self, *args: str, expect: int, input: bytes | str | None = None, env: dict | None = None,
            stdout_ok: bool = False, may_change: tuple[str, ...] = (), timeout: float = 300,
            message: str | None = None, stdout: str | None = None, prefix: tuple[str, ...] = ()) -> Result:
        """Run the CLI; assert a clean failure with exit status ``expect``; return the result.

        ``message``: a substring the one error line must contain (case-insensitive).
        ``stdout``: None captures it; "closed" starts the CLI with descriptor 1 closed (``>&-``);
        "full" points it at /dev/full (``>/dev/full``). ``prefix``: a command the CLI runs under
        (e.g. ``setpriv …`` to drop root's permission override)."""
        before = snapshot(self.work)
        full_env = dict(os.environ)
        full_env.update(env or {})
        if isinstance(input, str):
            input = input.encode()
        out, preexec = subprocess.PIPE, None
        if stdout == "full":
            out = open("/dev/full", "wb")
        elif stdout == "closed":
            out, preexec = subprocess.DEVNULL, (lambda: os.close(1))
        try:
            proc = subprocess.run([*prefix, sys.executable, "-m", "llmcli", *args], input=input if input is not None else b"",
                                  stdout=out, stderr=subprocess.PIPE, env=full_env, timeout=timeout, cwd=self.work,
                                  preexec_fn=preexec)
        finally:
            if stdout == "full":
                out.close()
        r = Result(proc.returncode, (proc.stdout or b"").decode("utf-8", "replace"),
                   proc.stderr.decode("utf-8", "replace"))
        after = snapshot(self.work)
        where = f"args={args!r}\nexit {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
        assert r.returncode == expect, where
        assert "Traceback" not in r.stderr, where
        if expect != 0:
            lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
            assert len(lines) == 1, where
            assert lines[0].startswith("error:"), where
            assert "internal error" not in lines[0], where
            if message is not None:
                assert message.lower() in lines[0].lower(), where
        if not stdout_ok:
            assert r.stdout == "", where
        changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
        changed -= set(may_change)
        assert not changed, f"files changed outside llmcli's folders: {sorted(changed)}\n{where}"
        return r
