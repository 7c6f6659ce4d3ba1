"""One exception family for everything a user can get wrong or the machine can refuse.

The CLI entry point maps these to a one-line message, an optional hint and an exit
code; nothing below ``cli/`` knows about exit codes or argv.
"""

from __future__ import annotations


class LlmcliError(Exception):
    """A failure we can explain to the user in one line."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(LlmcliError):
    """The command line or its input is wrong (exit 2)."""

    exit_code = 2


class ModelError(LlmcliError):
    """A model file or folder is missing, unreadable or not a model."""


class BackendError(LlmcliError):
    """A backend could not be chosen, loaded or run."""


class DownloadError(LlmcliError):
    """A hub download failed."""


class StoreError(LlmcliError):
    """The local model registry refused an operation."""


class StreamError(BackendError):
    """A reply stream broke after it had started (a server stopped mid-reply): the text that
    arrived before stays valid, the command reports this error after showing it."""
