"""Read-only questions to the Hugging Face hub: searching models, and the commit a revision is at now.

Calls go through huggingface_hub only (HF_ENDPOINT, HF_TOKEN and HF_HUB_OFFLINE apply), and its
exceptions are translated by ``huberrors.hub_errors``, the one place that knows their types.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from llmcli.errors import DownloadError
from llmcli.store import quant as q
from llmcli.store.huberrors import hub_errors, require_online
from llmcli.store.records import ModelRecord

SEARCH_TASK = "text-generation"
# Only these properties are asked for: "siblings" gives file names (formats and quants) in the same request.
SEARCH_EXPAND = ["downloads", "likes", "library_name", "pipeline_tag", "tags", "gated", "siblings"]
MAX_LIMIT = 1000  # the hub's page size cap


@dataclass(frozen=True)
class SearchHit:
    repo_id: str
    downloads: int
    likes: int
    formats: tuple[str, ...]  # "gguf", "safetensors"
    quants: tuple[str, ...]  # GGUF quant tags found in file names, best first
    library: str | None = None
    gated: bool = False

    def to_json(self) -> dict:
        return {"name": self.repo_id, "downloads": self.downloads, "likes": self.likes,
                "formats": list(self.formats), "quants": list(self.quants), "library": self.library,
                "gated": self.gated}


def _hit(info) -> SearchHit:
    names = [s.rfilename for s in (info.siblings or [])]
    tags = info.tags or []
    formats = []
    if any(q.is_gguf(n) for n in names) or "gguf" in tags:
        formats.append("gguf")
    if any(n.endswith(".safetensors") for n in names) or "safetensors" in tags:
        formats.append("safetensors")
    quants = q.available_quants(q.gguf_groups(names))
    return SearchHit(info.id, info.downloads or 0, info.likes or 0, tuple(formats), tuple(quants),
                     info.library_name, bool(info.gated))


def search(query: str, *, gguf_only: bool = False, limit: int = 20, token: str | None = None) -> list[SearchHit]:
    """Text-generation models whose id contains ``query``, most downloaded first (one request)."""
    from huggingface_hub import HfApi, get_token

    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit {limit} outside 1..{MAX_LIMIT}")  # the CLI range-checks it
    require_online("`llmcli models search`")
    with hub_errors("the model list", token_given=bool(token or get_token()), doing=f"searching for {query!r}"):
        infos = HfApi().list_models(search=query or None, pipeline_tag=SEARCH_TASK,
                                    filter="gguf" if gguf_only else None, sort="downloads", limit=limit,
                                    expand=SEARCH_EXPAND, token=token)
        hits = [_hit(i) for i in infos]  # the iterator makes the requests: consume it inside hub_errors
    # The hub's "gguf" filter is a tag; a repo can carry GGUF files without it, or the tag without files.
    return [h for h in hits if "gguf" in h.formats] if gguf_only else hits


def is_commit(revision: str) -> bool:
    """A full commit sha: a revision that can never move."""
    return re.fullmatch(r"[0-9a-f]{40}", revision) is not None


def current_commit(repo_id: str, revision: str, *, token: str | None = None) -> str:
    """The commit ``revision`` of ``repo_id`` points at on the hub now."""
    from huggingface_hub import HfApi, get_token

    with hub_errors(repo_id, revision=revision, token_given=bool(token or get_token()),
                    doing=f"checking {repo_id}@{revision}"):
        info = HfApi().model_info(repo_id, revision=revision, expand=["sha"], token=token)
    if not info.sha:
        raise DownloadError(f"the hub did not say which commit {repo_id}@{revision} is", "try again later")
    return info.sha


@dataclass(frozen=True)
class Staleness:
    """A pulled model and the commit its revision points at on the hub now (None: unknown, see error)."""

    record: ModelRecord
    current: str | None
    error: DownloadError | None = None

    @property
    def moved(self) -> bool:
        return self.current is not None and self.current != self.record.commit


def staleness(pulled: list[ModelRecord], *, token: str | None = None) -> list[Staleness]:
    """One request per repo and revision; a model that cannot be checked carries its error instead of
    failing the others (the caller decides what all-failed means)."""
    if pulled:
        require_online("`llmcli models outdated`")
    seen: dict[tuple[str, str], str | DownloadError] = {}
    out = []
    for rec in pulled:
        if is_commit(rec.revision):
            out.append(Staleness(rec, rec.commit))  # pinned to a commit: it cannot move
            continue
        key = (rec.repo, rec.revision)
        if key not in seen:
            try:
                seen[key] = current_commit(rec.repo, rec.revision, token=token)
            except DownloadError as e:
                seen[key] = e
        got = seen[key]
        out.append(Staleness(rec, got) if isinstance(got, str) else Staleness(rec, None, got))
    return out
