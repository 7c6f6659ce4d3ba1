"""Pulling models from the Hugging Face hub, through huggingface_hub only.

``plan()`` asks the hub which files a pull spec means (one model-info call), ``fetch()``
downloads them into the standard HF cache with ``hf_hub_download`` (pinned to the commit the
plan saw, so a repo updated mid-pull cannot mix revisions) and verifies every file against
the hub's hashes, ``pull()`` registers the result only once everything is present and verified.

huggingface_hub's exception *types* are translated into ``DownloadError`` in ``huberrors``, in one place.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from llmcli.errors import DownloadError, UsageError
from llmcli.store import quant as q
from llmcli.store.huberrors import DEFAULT_REVISION, hub_errors
from llmcli.store.records import ModelRecord, StoredFile

@dataclass
class RemoteFile:
    name: str
    size: int | None = None
    sha256: str | None = None  # LFS files
    blob_id: str | None = None  # git blob sha1 (the etag of non-LFS files)

    @property
    def etag(self) -> str | None:
        return self.sha256 or self.blob_id


@dataclass
class PullPlan:
    repo_id: str
    revision: str
    commit: str
    format: str  # "gguf" | "hf"
    files: list[RemoteFile]
    quant: str | None = None
    note: str | None = None  # why this quant/format was picked, for stderr
    license: str | None = None
    default_name: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def total_size(self) -> int:
        return sum(f.size or 0 for f in self.files)


# ---------------------------------------------------------------- cache locations

def hub_cache_dir() -> Path:
    """The HF hub cache (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE).expanduser()


def repo_cache_dir(repo_id: str) -> Path:
    from huggingface_hub.file_download import repo_folder_name

    return hub_cache_dir() / repo_folder_name(repo_id=repo_id, repo_type="model")


# ---------------------------------------------------------------- planning

def _license(info) -> str | None:
    card = getattr(info, "card_data", None)
    lic = None
    if card is not None:
        lic = card.get("license") if hasattr(card, "get") else getattr(card, "license", None)
    if not lic:
        for tag in getattr(info, "tags", None) or []:
            if isinstance(tag, str) and tag.startswith("license:"):
                lic = tag.split(":", 1)[1]
                break
    return lic if isinstance(lic, str) else None


def default_name(repo_id: str, fmt: str, quant: str | None, entry: str, revision: str | None) -> str:
    name = repo_id
    if fmt == "gguf":
        label = quant or re.sub(r"\.gguf$", "", q.group_key(entry).rsplit("/", 1)[-1], flags=re.I)
        name += ":" + (re.sub(r"[^A-Za-z0-9._+-]+", "-", label).strip("-.") or "model")
    if revision and revision != DEFAULT_REVISION:
        name += "@" + re.sub(r"[^A-Za-z0-9._-]+", "-", revision)[:60]
    return name


def _list_files(names: list[str], limit: int = 10) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", … ({len(names) - limit} more)" if len(names) > limit else "")


def plan(spec: str, *, revision: str | None = None, token: str | None = None, fmt: str | None = None,
         prefer: tuple[str, str] | None = None) -> PullPlan:
    """Which files ``spec`` means at ``revision`` (one hub call, nothing downloaded). ``prefer`` is
    (format, why) for a repository with both GGUF and safetensors weights and no ``--format``
    (the caller knows the machine: safetensors for torch on a CUDA GPU, else GGUF); without it, GGUF."""
    from huggingface_hub import HfApi

    try:
        repo_id, tag, filename = q.parse_pull_spec(spec)
    except ValueError as e:
        raise UsageError(str(e), "expected OWNER/REPO, OWNER/REPO:QUANT or OWNER/REPO/FILE.gguf") from None
    if fmt not in (None, "gguf", "hf"):
        raise UsageError(f"unknown --format {fmt!r}", "choose gguf or hf")
    if fmt == "hf" and (tag or filename):
        raise UsageError("--format hf pulls a whole HF-format repository: drop the :QUANT tag or file name")
    rev = revision or DEFAULT_REVISION
    with hub_errors(repo_id, revision=rev, token_given=bool(token)):
        info = HfApi().model_info(repo_id, revision=rev, files_metadata=True, token=token)
    commit = info.sha
    if not commit:
        raise DownloadError(f"the hub did not say which commit {repo_id}@{rev} is", "try again later")
    remote: dict[str, RemoteFile] = {}
    for s in info.siblings or []:
        lfs = s.lfs
        sha = (lfs.get("sha256") if isinstance(lfs, dict) else getattr(lfs, "sha256", None)) if lfs else None
        remote[s.rfilename] = RemoteFile(s.rfilename, s.size, sha, s.blob_id)
    names = sorted(remote)
    groups = q.gguf_groups(names)
    note = None

    def gguf_plan(group: q.GgufGroup, why: str | None) -> PullPlan:
        if not group.complete:
            raise DownloadError(f"split GGUF {group.key} is incomplete in {repo_id}: {len(group.files)} of "
                                f"{group.expected_parts} parts", "pick another quant, or report it to the repository")
        return PullPlan(repo_id, rev, commit, "gguf", [remote[n] for n in group.files], group.quant, why,
                        _license(info), default_name(repo_id, "gguf", group.quant, group.files[0], revision))

    if filename:
        if filename not in remote:
            ggufs = [g.files[0] for g in groups]
            raise DownloadError(f"file {filename!r} does not exist in {repo_id}@{rev}",
                                f"GGUF files there: {_list_files(ggufs)}" if ggufs else "the repository has no GGUF files")
        if not q.is_gguf(filename):
            raise UsageError(f"{filename} is not a .gguf file: single files can only be pulled for GGUF models",
                             f"pull the whole repository for HF format: llmcli pull {repo_id}")
        group = next((g for g in groups if filename in g.files), None)
        if group is None:  # an mmproj/imatrix file asked for by name
            group = q.GgufGroup(q.quant_of(filename), [filename])
        if len(group.files) > 1:
            note = f"{filename} is part of a split GGUF: pulling all {len(group.files)} parts"
        return gguf_plan(group, note)

    if tag:
        if not groups:
            raise DownloadError(f"{repo_id} has no GGUF files, so the :{tag} quant tag does not apply",
                                f"pull the HF-format repository without a tag: llmcli pull {repo_id}")
        try:
            group = q.pick_by_tag(groups, tag)
        except q.QuantChoiceError as e:
            raise DownloadError(f"{e} in {repo_id}", f"available quants: {', '.join(e.choices) or 'none'}"
                                if e.choices else "no file name carries a quant tag") from None
        if len(group.files) > 1:
            note = f"{group.quant} is a split GGUF: pulling all {len(group.files)} parts"
        return gguf_plan(group, note)

    hf = q.hf_files(names)
    has_weights = any(n.endswith(".safetensors") for n in hf)
    has_hf = "config.json" in hf and has_weights
    if fmt == "gguf" and not groups:
        raise DownloadError(f"{repo_id} has no GGUF files (--format gguf)",
                            f"pull the HF-format weights without --format: llmcli pull {repo_id}")
    prefer_fmt, prefer_why = prefer or ("gguf", "")
    both = has_hf and bool(groups)
    if fmt == "hf" or (has_hf and not groups) or (fmt is None and both and prefer_fmt == "hf"):
        if not has_hf:
            pickles = [n for n in names if n.lower().endswith(q.PICKLE_SUFFIXES)]
            if "config.json" in names and pickles:
                raise DownloadError(f"{repo_id} has only pickle weights ({_list_files(pickles, 3)})",
                                    "llmcli never downloads pickle files (they can run code); look for a "
                                    "safetensors or GGUF version of this model")
            raise DownloadError(f"{repo_id} is not an HF-format model repository (no config.json + safetensors)",
                                "pull a GGUF file instead, e.g. OWNER/REPO:Q4_K_M")
        why = None
        if groups:
            why = ("--format hf" if fmt == "hf" else
                   f"the repository has GGUF and safetensors weights, and {prefer_why}") + \
                ": pulling the safetensors weights, not the GGUF files" + \
                ("" if fmt == "hf" else " (pass --format gguf for a GGUF)")
        return PullPlan(repo_id, rev, commit, "hf", [remote[n] for n in hf], None, why, _license(info),
                        default_name(repo_id, "hf", None, "", revision))
    if groups:
        try:
            group, why = q.pick_default(groups)
        except q.QuantChoiceError as e:
            raise DownloadError(f"{e} in {repo_id}", f"name one: llmcli pull {repo_id}/FILE.gguf "
                                f"(files: {_list_files(e.choices)})") from None
        why = f"no quant tag given: picked {group.quant or group.files[0]} because {why}"
        if has_hf:
            why += (f"; the repository also has safetensors weights, and {prefer_why}" if prefer_why and fmt is None
                    else "") + " (pass --format hf for the safetensors weights)"
        return gguf_plan(group, why)
    pickles = [n for n in names if n.lower().endswith(q.PICKLE_SUFFIXES)]
    if pickles:
        raise DownloadError(f"{repo_id} has only pickle weights ({_list_files(pickles, 3)})",
                            "llmcli never downloads pickle files (they can run code); look for a safetensors or "
                            "GGUF version of this model")
    raise DownloadError(f"{repo_id} holds no GGUF or safetensors model files",
                        f"files there: {_list_files(names)}" if names else "the repository is empty")


# ---------------------------------------------------------------- downloading

def _discard(pointer: str | None) -> None:
    """Delete a downloaded file from the cache: the snapshot pointer and the blob behind it."""
    if not pointer:
        return
    blob = os.path.realpath(pointer)
    for p in {pointer, blob}:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


def verify_file(rf: RemoteFile, pointer: str, streamed_sha256: str | None = None) -> None:
    """Check a downloaded file against the hub's size and hash; delete it and fail on a mismatch."""
    from llmcli.store.verify import git_blob_sha1, sha256_file

    size = os.path.getsize(pointer)
    problem = None
    if rf.size is not None and size != rf.size:
        problem = f"size {size} bytes, the hub says {rf.size}"
    elif rf.sha256:
        got = streamed_sha256 if streamed_sha256 == rf.sha256 else sha256_file(pointer)
        if got != rf.sha256:
            problem = f"sha256 {got[:16]}…, the hub says {rf.sha256[:16]}…"
    elif rf.blob_id and re.fullmatch(r"[0-9a-f]{40}", rf.blob_id):
        got = git_blob_sha1(pointer)
        if got != rf.blob_id:
            problem = f"git sha1 {got[:12]}…, the hub says {rf.blob_id[:12]}…"
    if problem:
        _discard(pointer)
        raise DownloadError(f"{rf.name} is corrupt ({problem}); the bad file was deleted and nothing was registered",
                            "run the pull again; if it fails again, a proxy or mirror is serving bad data")


def _write_ref(repo_id: str, revision: str, commit: str) -> None:
    """Record revision -> commit in the cache's refs/, so other HF tools find the snapshot offline."""
    if revision == commit or re.fullmatch(r"[0-9a-f]{40}", revision):
        return
    refs = repo_cache_dir(repo_id) / "refs"
    target = refs / revision
    if ".." in Path(revision).parts or not str(target.resolve()).startswith(str(refs.resolve())):
        return
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_text(commit)
        os.replace(tmp, target)
    except OSError:
        pass  # a convenience for other tools; our registry does not need it


def fetch(p: PullPlan, *, token: str | None = None, tqdm_class=None,
          on_file: Callable[[RemoteFile], None] | None = None) -> list[StoredFile]:
    """Download (or find in the cache) and verify every file of the plan."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    from llmcli.store.verify import TailHasher

    blobs = repo_cache_dir(p.repo_id) / "blobs"
    out = []
    for rf in p.files:
        if on_file:
            on_file(rf)
        for attempt in (1, 2):
            cached = isinstance(try_to_load_from_cache(p.repo_id, rf.name, revision=p.commit), str)
            hasher = TailHasher(blobs, rf.sha256) if rf.sha256 and not cached else None
            if hasher:
                hasher.start()
            pointer = None
            try:
                with hub_errors(p.repo_id, revision=p.revision, filename=rf.name, token_given=bool(token)):
                    pointer = hf_hub_download(p.repo_id, rf.name, revision=p.commit, token=token,
                                              tqdm_class=tqdm_class)
            finally:
                streamed = hasher.finish(os.path.realpath(pointer) if pointer else None) if hasher else None
            try:
                verify_file(rf, pointer, streamed)
                break
            except DownloadError:
                if cached and attempt == 1:
                    continue  # a damaged copy was already in the cache: it is deleted now, fetch it afresh
                raise
        out.append(StoredFile(rf.name, pointer, os.path.getsize(pointer), rf.sha256, rf.blob_id))
    _write_ref(p.repo_id, p.revision, p.commit)
    return out


def record_for(p: PullPlan, files: list[StoredFile], name: str, spec: str) -> ModelRecord:
    path = files[0].path if p.format == "gguf" else str(Path(files[0].path).parent)
    return ModelRecord(name, "pulled", p.format, path, tuple(files), sum(f.size for f in files), p.quant, p.license,
                       p.repo_id, p.revision, p.commit, spec)
