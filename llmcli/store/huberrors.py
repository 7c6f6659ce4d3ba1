"""huggingface_hub's exception types, and the transport's, translated into one-line ``DownloadError``s
with a hint: the one place that knows them (``hub`` and ``hubquery`` wrap every hub call in
``hub_errors``)."""

from __future__ import annotations

import os
from contextlib import contextmanager

from llmcli.errors import DownloadError


DEFAULT_REVISION = "main"


def endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Connection-level exception types of whichever HTTP library huggingface_hub uses."""
    found: list[type[BaseException]] = []
    for mod_name, names in (("httpx2", ("TransportError",)), ("httpx", ("TransportError",)),
                            ("requests", ("ConnectionError", "Timeout"))):
        try:
            mod = __import__(mod_name)
        except ImportError:
            continue
        found += [getattr(mod, n) for n in names if hasattr(mod, n)]
    return tuple(found)


def _REMOTE_ENTRY_NOT_FOUND(E) -> type[BaseException]:
    # huggingface_hub >= 1.0 splits it from LocalEntryNotFoundError; before, the HTTP one was the base class.
    return getattr(E, "RemoteEntryNotFoundError", None) or E.EntryNotFoundError


def _status(e: BaseException) -> int | None:
    response = getattr(e, "response", None)
    return getattr(response, "status_code", None)


OFFLINE_HINT = "models already pulled work offline: see `llmcli models list` and use -m NAME"
TOKEN_HINT = "set HF_TOKEN or pass --token with a Hugging Face access token"


def require_online(command: str) -> None:
    """Fail before any request when HF_HUB_OFFLINE is set; ``command`` is e.g.
    "`llmcli models search`"."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        # huggingface_hub also honours transformers' older variable: name the one that is set.
        var = "HF_HUB_OFFLINE" if os.environ.get("HF_HUB_OFFLINE") else "TRANSFORMERS_OFFLINE"
        raise DownloadError(f"{command} needs the hub, but {var}={os.environ.get(var)} is set",
                            f"unset {var} to reach the hub; {OFFLINE_HINT}")


@contextmanager
def hub_errors(repo_id: str, *, revision: str | None = None, filename: str | None = None,
               token_given: bool = False, doing: str | None = None):
    """Translate huggingface_hub / transport exception types into one-line DownloadErrors.

    ``doing`` words what was being done (default "pulling REPO"), for errors not about one file."""
    from huggingface_hub import errors as E

    where = repo_id + (f"@{revision}" if revision and revision != DEFAULT_REVISION else "")
    what = f"{filename} in {where}" if filename else where
    doing = doing or f"pulling {what}"
    try:
        yield
    except E.OfflineModeIsEnabled:
        raise DownloadError(f"cannot pull {what}: offline mode is on (HF_HUB_OFFLINE)",
                            f"unset HF_HUB_OFFLINE to download; {OFFLINE_HINT}") from None
    except E.GatedRepoError:
        raise DownloadError(f"{repo_id} is a gated repository: you must accept its terms on the hub first",
                            f"accept them at {endpoint()}/{repo_id}, then {TOKEN_HINT} of that account") from None
    except E.RepositoryNotFoundError as e:
        if _status(e) in (401, 403):
            msg = (f"the hub rejected the token for {repo_id}" if token_given else
                   f"repository {repo_id} was not found or is private (HTTP {_status(e)})")
            raise DownloadError(msg, f"check the name; for a private or gated repository {TOKEN_HINT}") from None
        raise DownloadError(f"repository {repo_id} does not exist on {endpoint()} (HTTP 404)",
                            "check the owner/name spelling") from None
    except E.RevisionNotFoundError:
        raise DownloadError(f"revision {revision!r} does not exist in {repo_id}",
                            "pass a branch, tag or commit of the repository with --revision (default: main)") from None
    except E.LocalEntryNotFoundError as e:
        cause = e.__cause__ or e.__context__
        if isinstance(cause, E.OfflineModeIsEnabled):
            raise DownloadError(f"cannot pull {what}: offline mode is on (HF_HUB_OFFLINE)",
                                f"unset HF_HUB_OFFLINE to download; {OFFLINE_HINT}") from None
        if isinstance(cause, E.FileMetadataError):
            raise DownloadError(f"the server at {endpoint()} does not answer like a Hugging Face hub "
                                f"(no commit or ETag headers for {what})",
                                "check HF_ENDPOINT, proxies and TLS settings") from None
        raise DownloadError(f"cannot reach the hub at {endpoint()} to download {what}",
                            f"check your network or HF_ENDPOINT; {OFFLINE_HINT}") from None
    except _REMOTE_ENTRY_NOT_FOUND(E):
        raise DownloadError(f"file {filename!r} does not exist in {where} (HTTP 404)",
                            "check the file name; `llmcli pull OWNER/REPO` lists what the repository holds") from None
    except E.HfHubHTTPError as e:
        status = _status(e)
        if status == 401:
            msg = f"the hub rejected the token for {repo_id} (HTTP 401)" if token_given else \
                f"{repo_id} needs authentication (HTTP 401): it is private or gated"
            raise DownloadError(msg, TOKEN_HINT) from None
        if status == 403:
            raise DownloadError(f"access to {what} is forbidden (HTTP 403)",
                                f"your token lacks access to this repository; {TOKEN_HINT}") from None
        if status == 404:
            raise DownloadError(f"{what} does not exist on {endpoint()} (HTTP 404)",
                                "check the repository and file names") from None
        if status == 429:
            raise DownloadError(f"the hub is rate-limiting requests (HTTP 429) while {doing}",
                                "wait a minute and run the pull again; a token (HF_TOKEN) raises the limit") from None
        raise DownloadError(f"the hub answered HTTP {status} while {doing}",
                            "try again later; run with -v for details") from None
    except _transport_errors() as e:
        raise DownloadError(f"cannot reach the hub at {endpoint()} ({type(e).__name__})",
                            f"check your network or HF_ENDPOINT; {OFFLINE_HINT}") from None
    except ConnectionError as e:
        raise DownloadError(f"cannot reach the hub at {endpoint()} ({e.__class__.__name__})",
                            f"check your network or HF_ENDPOINT; {OFFLINE_HINT}") from None
    except OSError as e:
        if isinstance(e, (PermissionError, FileNotFoundError)) or e.errno is not None:
            raise DownloadError(f"cannot write the download of {what}: {e.strerror or e}",
                                f"check free space and permissions of {_cache_dir()} (HF_HOME)") from None
        # huggingface_hub's size consistency check after retries ran out, and similar.
        raise DownloadError(f"the download of {what} did not complete", "run the pull again") from None


def _cache_dir():
    from llmcli.store.hub import hub_cache_dir  # hub imports this module: import at call time

    return hub_cache_dir()
