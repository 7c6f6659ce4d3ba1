"""The ``openai`` client for the remote backend: building it, the one translation of its
exception types into one-line errors, and the engine-specific endpoints beyond the OpenAI
API (tokenize, detokenize, chat template, context size).

``openai`` (and the HTTP stack under it) is imported inside ``make_client`` only: importing
this module costs nothing, so ``llmcli --help`` and local models never pay for it.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from llmcli.errors import BackendError, LlmcliError, StreamError, UsageError

T = TypeVar("T")

# A server may think for minutes before its first token (a long prompt on a big model), but a
# host that does not even accept the connection within seconds is down.
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 600.0
# openai retries connection errors, 408, 409, 429 and 5xx with backoff.
MAX_RETRIES = 2
KEY_ENV_VARS = ("LLMCLI_API_KEY", "OPENAI_API_KEY")
# Sent when the user has no key: servers without authentication ignore it (vLLM's docs use
# the same placeholder); it tells a server with authentication nothing.
NO_KEY = "EMPTY"


@dataclass(frozen=True)
class ApiKey:
    """The key and where it came from. ``repr`` never shows the key."""

    value: str | None
    source: str  # "--api-key" | an env var name | "none"

    def __repr__(self) -> str:
        return f"ApiKey(source={self.source!r})"


def api_key(flag: str | None, environ) -> ApiKey:
    """``--api-key`` > ``LLMCLI_API_KEY`` > ``OPENAI_API_KEY``."""
    if flag:
        return ApiKey(flag, "--api-key")
    for name in KEY_ENV_VARS:
        if environ.get(name):
            return ApiKey(environ[name], name)
    return ApiKey(None, "none")


class Server:
    """One OpenAI-compatible server: the client, its URL and the translation of its errors."""

    def __init__(self, url: str, key: ApiKey, *, timeout: float = READ_TIMEOUT_S):
        self.url = url
        self.key = key
        self.root = url[: -len("/v1")] if url.endswith("/v1") else url
        self.client = make_client(url, key, timeout=timeout)

    def call(self, fn: Callable[[], T], *, model_ids: Sequence[str] = (), listing: bool = False) -> T:
        """Run one openai call; its exceptions become one-line LlmcliErrors. ``listing``: the call is
        the first one, /v1/models — a 404 there means the URL is no OpenAI API at all."""
        try:
            return fn()
        except LlmcliError:
            raise
        except Exception as e:  # noqa: BLE001 - translated by type below, re-raised otherwise
            if listing and getattr(e, "status_code", None) == 404:
                raise not_openai(self.url) from e
            raise self.translate(e, model_ids=model_ids) from e

    def post(self, path: str, body: dict) -> Any:
        """POST JSON to an engine endpoint outside /v1 (``/tokenize`` …); the parsed JSON reply."""
        return self.call(lambda: self.client.post(self.root + path, body=body, cast_to=object))

    def translate(self, e: BaseException, *, model_ids: Sequence[str] = ()) -> BaseException:
        return translate(e, self.url, self.key, model_ids=model_ids)


def make_client(url: str, key: ApiKey, *, timeout: float):
    import openai

    return openai.OpenAI(base_url=url, api_key=key.value or NO_KEY, max_retries=MAX_RETRIES,
                         timeout=openai.Timeout(timeout, connect=CONNECT_TIMEOUT_S))


def translate(e: BaseException, url: str, key: ApiKey, *, model_ids: Sequence[str] = ()) -> BaseException:
    """openai's exception types → one line with a hint. Anything else is returned unchanged (a
    bug of ours must show as one, not as a server problem)."""
    import openai

    if isinstance(e, openai.APITimeoutError):
        return BackendError(f"the server at {url} did not answer in time",
                            "check the server's load and logs; a long prompt on a big model can take minutes")
    if isinstance(e, openai.APIConnectionError):
        return _connection_error(e, url)
    if isinstance(e, (openai.AuthenticationError, openai.PermissionDeniedError)):
        status = e.status_code
        if key.value is None:
            return BackendError(f"the server at {url} requires an API key ({status})",
                                "pass --api-key KEY or set LLMCLI_API_KEY")
        return BackendError(f"the server at {url} refused the API key from {key.source} ({status})",
                            "check the key the server was started with")
    if isinstance(e, openai.NotFoundError):
        if model_ids:
            return BackendError(f"the server at {url} does not know that model; it serves: {', '.join(model_ids)}",
                                f"use -m '{url}#MODEL_ID' with one of those ids")
        return BackendError(f"the server at {url} has no such endpoint ({_detail(e)})",
                            "check that the URL is the server's OpenAI API root, usually ending in /v1")
    if isinstance(e, (openai.BadRequestError, openai.UnprocessableEntityError)):
        return UsageError(f"the server at {url} rejected the request: {_detail(e)}",
                          "check the sampling options and the prompt length against the server's limits")
    if isinstance(e, openai.RateLimitError):
        return BackendError(f"the server at {url} is rate-limiting requests (429, after retries)",
                            "wait and try again, or lower the request rate")
    if isinstance(e, openai.APIStatusError):
        return BackendError(f"the server at {url} failed: HTTP {e.status_code} ({_detail(e)})",
                            "see the server's log")
    if isinstance(e, openai.APIResponseValidationError) or _is_decode_error(e):
        return not_openai(url)
    if isinstance(e, openai.APIError):  # an error event inside a stream
        return StreamError(f"the server at {url} reported an error mid-reply: {e.message}", "see the server's log")
    if isinstance(e, openai.OpenAIError):
        return BackendError(f"the OpenAI client failed for {url}: {e}")
    return e


def not_openai(url: str) -> BackendError:
    return BackendError(f"the server at {url} does not speak the OpenAI API",
                        "point -m at an OpenAI-compatible server's API root, e.g. http://host:8000/v1")


def _is_decode_error(e: BaseException) -> bool:
    import json

    return isinstance(e, (json.JSONDecodeError, UnicodeDecodeError))


def _detail(e) -> str:
    body = getattr(e, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        msg = inner.get("message") if isinstance(inner, dict) else inner
        if msg:
            return " ".join(str(msg).split())[:200]
    return " ".join(str(getattr(e, "message", e)).split())[:200]


def _root_cause(e: BaseException) -> BaseException:
    seen = set()
    while id(e) not in seen:
        seen.add(id(e))
        nxt = e.__cause__ or e.__context__
        if nxt is None:
            break
        e = nxt
    return e


def _connection_error(e: BaseException, url: str) -> BackendError:
    cause = _root_cause(e)
    text = str(cause)
    if isinstance(cause, socket.gaierror) or "Name or service not known" in text or "nodename nor servname" in text:
        return BackendError(f"cannot resolve the host of {url}", "check the host name in the model URL")
    if isinstance(cause, ConnectionRefusedError) or getattr(cause, "errno", None) == errno.ECONNREFUSED \
            or "Connection refused" in text:
        return BackendError(f"cannot connect to {url}: connection refused",
                            "is the server running and listening on that host and port?")
    if e.__class__.__name__ == "APIConnectionError" and _mid_stream(cause):
        return StreamError(f"the connection to {url} broke in the middle of the reply",
                         "the server may have stopped; see its log")
    return BackendError(f"cannot reach {url}: {text or type(cause).__name__}",
                        "check the URL, the network and that the server is running")


def _mid_stream(cause: BaseException) -> bool:
    name = type(cause).__name__
    return name in ("RemoteProtocolError", "ReadError", "IncompleteRead", "ProtocolError") or \
        isinstance(cause, (ConnectionResetError, BrokenPipeError))
