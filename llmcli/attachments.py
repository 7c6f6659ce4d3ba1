"""Files given as context (``-f PATH``, chat's ``/file PATH``): reading them as UTF-8 text, and the
one documented layout in which they precede the instruction (docs/usage.md, "Files as context").

Each file becomes a block::

    File: NAME
    ```
    …the file's text…
    ```

(the fence is longer than any run of backticks inside the file), blocks are separated by a blank
line, then come piped stdin and the instruction, as without files."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from llmcli.errors import LlmcliError, UsageError

STDIN_NAME = "stdin"
ACCEPTED = "UTF-8 text without NUL bytes"


class AttachmentError(LlmcliError):
    """A file that cannot be used as context (missing, unreadable, binary, not UTF-8)."""


@dataclass(frozen=True)
class Attachment:
    name: str  # as the user wrote it; "stdin" for -f -
    text: str

    def block(self) -> str:
        longest = max((len(m) for m in re.findall(r"`+", self.text)), default=0)
        fence = "`" * max(3, longest + 1)
        body = self.text if self.text.endswith("\n") or not self.text else self.text + "\n"
        return f"File: {self.name}\n{fence}\n{body}{fence}"


def decode(name: str, data: bytes) -> Attachment:
    hint = f"-f accepts {ACCEPTED}"
    if b"\x00" in data:
        raise AttachmentError(f"{name} is a binary file (it contains NUL bytes)", hint)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise AttachmentError(f"{name} is not UTF-8 text (invalid byte at offset {e.start})", hint) from None
    return Attachment(name, text.removeprefix("\ufeff"))


def read_file(path: str, read_stdin: Callable[[], bytes] | None = None) -> Attachment:
    """PATH ("-" = stdin through READ_STDIN) as an Attachment, or an AttachmentError naming it."""
    if path == "-":
        if read_stdin is None:
            raise UsageError("-f - (stdin) is not available here", "give a file path")
        return decode(STDIN_NAME, read_stdin())
    full = os.path.expanduser(path)
    if os.path.isdir(full):
        raise AttachmentError(f"{path} is a folder, not a file", f"-f accepts files of {ACCEPTED}")
    try:
        with open(full, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise AttachmentError(f"file not found: {path}", "check the path") from None
    except OSError as e:
        raise AttachmentError(f"cannot read {path}: {e.strerror or e}") from None
    return decode(path, data)


def compose(files: Sequence[Attachment], stdin_text: str | None, instruction: str | None) -> str:
    """Files, then piped stdin, then the instruction: the prompt as docs/usage.md documents it."""
    parts = [a.block() for a in files]
    if stdin_text is not None and stdin_text.strip():
        parts.append(stdin_text.rstrip() if parts or instruction else stdin_text)
    if instruction:
        parts.append(instruction)
    text = "\n\n".join(parts)
    if not text.strip():
        raise UsageError("empty prompt", 'pass the prompt as an argument or on stdin: llmcli generate "…"')
    return text


def overflow_error(files: Sequence[Attachment], total: int, window: int, count: Callable[[str], int],
                   reserve: int = 0) -> UsageError:
    """The one-line error when files make the prompt too long: every file with its token count."""
    sizes = ", ".join(f"{a.name} {count(a.block())} tokens" for a in files)
    room = f" (with {reserve} tokens kept for the reply)" if reserve else ""
    return UsageError(f"the prompt is {total} tokens but the context window is {window} tokens{room}; "
                      f"files: {sizes}", "attach fewer or smaller files, or raise --ctx if the model allows more")
