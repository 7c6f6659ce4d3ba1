"""``ModelStore``: every operation on the local model store, returning frozen records.

The registry file (``registry.py``) and the HF cache (``cache.py``, through huggingface_hub's
cache API) are its private business: ``cli/models.py`` only presents what these methods return,
and ``resolve.py`` asks it for names and the default model.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from llmcli.errors import ModelError, StoreError, UsageError
from llmcli.store import registry
from llmcli.store.records import ModelRecord, Registry, StoredFile, now, validate_name
from llmcli.store.refs import ModelRef, ref_from_path
from llmcli.store.reports import FileCheck, ModelInfo, PruneReport, PullResult, Removal, Verification

NOT_FOUND_HINT = "see `llmcli models list`"


def not_found(name: str) -> StoreError:
    return StoreError(f"no model named {name!r} in the store", NOT_FOUND_HINT)


class ModelStore:
    """The registry and the HF-cache files it owns. Paths come from the environment at call time."""

    # ------------------------------------------------------------ reading

    def snapshot(self, *, for_write: bool = False) -> Registry:
        """The registry now; ``for_write`` words a read failure as the write it is the first step of."""
        return registry.read(registry.registry_path(), for_write=for_write)

    def list(self) -> tuple[ModelRecord, ...]:
        return tuple(sorted(self.snapshot().models.values(), key=lambda r: r.name.lower()))

    def find(self, name: str, reg: Registry | None = None) -> ModelRecord:
        rec = (reg if reg is not None else self.snapshot()).get(name)
        if rec is None:
            raise not_found(name)
        return rec

    def ref(self, rec: ModelRecord, reg: Registry | None = None) -> ModelRef:
        if rec.kind == "adapter":
            return self._adapter_ref(rec, reg)
        if rec.kind == "remote":
            return ModelRef(None, "remote", rec.name, "store", extra={"record": rec}, url=rec.url,
                            model_id=rec.model_id)
        path = Path(rec.path)
        if not path.exists():
            where = "imported from" if rec.kind == "imported" else "stored at"
            raise ModelError(f"model {rec.name!r} is registered but its files are gone ({where} {path})",
                             f"pull or import it again, or run `llmcli models rm {rec.name}`")
        return ModelRef(path, rec.format, rec.name, "store", extra={"record": rec})

    def _adapter_ref(self, rec: ModelRecord, reg: Registry | None) -> ModelRef:
        from llmcli.store import adapters

        return adapters.adapter_ref(self, rec, reg if reg is not None else self.snapshot())

    def add_adapter(self, name: str, staged: Path, base, training: dict) -> tuple[ModelRecord, ModelRecord | None]:
        """Move a finished adapter folder (``staged``, inside the data dir) into the store and register it
        as ``name`` over ``base`` (an ``adapters.BaseIdentity``); (record, the record it replaced). A
        failure leaves nothing registered and removes the folder."""
        from llmcli.store import adapters

        return adapters.add(self, name, staged, base, training)

    def lookup(self, name: str) -> ModelRef | None:
        """A store name or alias -> ModelRef, or None when unknown."""
        if "\x00" in name:
            return None
        rec = self.snapshot().get(name)
        return self.ref(rec) if rec is not None else None

    def default_ref(self) -> ModelRef | None:
        reg = self.snapshot()
        return self.ref(reg.models[reg.default]) if reg.default else None

    def default_name(self) -> str | None:
        return self.snapshot().default

    def show(self, name: str) -> ModelInfo:
        """A registered model, or else an existing path, with the metadata read from its headers."""
        from llmcli.store.metadata import model_metadata

        try:
            reg = self.snapshot()
        except StoreError:
            if "\x00" in name or not os.path.lexists(Path(name).expanduser()):
                raise
            reg = Registry()  # a damaged registry never hides a model given by its path
        rec = reg.get(name)
        if rec is not None and rec.kind == "adapter":
            ref = self.ref(rec, reg)
            meta = model_metadata(ref.format, ref.path)
            return ModelInfo(rec, ref, meta, rec.files, tuple(reg.aliases_of(rec.name)), reg.default == rec.name)
        if rec is not None and rec.kind == "remote":  # no files, no headers: the server has the model
            return ModelInfo(rec, self.ref(rec), {}, (), tuple(reg.aliases_of(rec.name)), reg.default == rec.name)
        if rec is not None:
            ref = self.ref(rec)
            parts = [Path(f.path) for f in rec.files if f.path.lower().endswith(".gguf")]
            meta = model_metadata(ref.format, ref.path, parts if ref.format == "gguf" and parts else None)
            return ModelInfo(rec, ref, meta, rec.files, tuple(reg.aliases_of(rec.name)), reg.default == rec.name)
        if "\x00" in name or not os.path.lexists(Path(name).expanduser()):
            raise not_found(name)
        ref = ref_from_path(Path(name).expanduser())
        meta = model_metadata(ref.format, ref.path)
        return ModelInfo(None, ref, meta, _local_files(ref))

    # ------------------------------------------------------------ adding

    def plan_pull(self, spec: str, *, name: str | None = None, revision: str | None = None,
                  token: str | None = None, fmt: str | None = None, prefer: tuple[str, str] | None = None):
        """What ``pull`` would download, and the name it would register (nothing downloaded).
        ``prefer``: (format, why) for a repository with both GGUF and safetensors weights."""
        from llmcli.store import hub

        if name is not None:
            validate_name(name)
        p = hub.plan(spec, revision=revision, token=token, fmt=fmt, prefer=prefer)
        return p, validate_name(name or p.default_name)

    def pull(self, spec: str, *, name: str | None = None, revision: str | None = None, token: str | None = None,
             fmt: str | None = None, prefer: tuple[str, str] | None = None, tqdm_class=None,
             notify: Callable[[str], None] = lambda s: None) -> PullResult:
        """Plan, download + verify, then register — in that order, so an interrupted or failed pull
        never leaves a registered model behind."""
        p, name = self.plan_pull(spec, name=name, revision=revision, token=token, fmt=fmt, prefer=prefer)
        probe = ModelRecord(name, "pulled", p.format, "-", repo=p.repo_id, revision=p.revision, commit=p.commit)
        self._check_free(self.snapshot(for_write=True), probe)  # before downloading gigabytes
        if p.note:
            notify(p.note)
        return self._install(p, name, spec, token=token, tqdm_class=tqdm_class)

    def _install(self, p, name: str, spec: str, *, token: str | None, tqdm_class,
                 expect_commit: str | None = None) -> PullResult:
        """Download + verify the plan's files, then switch the record to them in one registry write;
        only then free what only the replaced record used."""
        from llmcli.store import cache, hub

        files = hub.fetch(p, token=token, tqdm_class=tqdm_class)
        record = hub.record_for(p, files, name, spec)
        replaced = self._register(record, expect_commit=expect_commit)
        freed = 0
        if replaced is not None:
            # The same model at another revision or quant: free what only the old record used.
            freed = cache.release_files(replaced, self.snapshot().models.values())
        return PullResult(self.find(name), replaced, freed)

    # ------------------------------------------------------------ hub revisions

    def outdated(self, *, token: str | None = None) -> list:
        """Each pulled model against the commit its revision points at on the hub now."""
        from llmcli.store import hubquery

        return hubquery.staleness([r for r in self.list() if r.kind == "pulled"], token=token)

    def plan_update(self, name: str, *, token: str | None = None):
        """(record, plan) for re-pulling a pulled model's files at its revision's current commit."""
        from llmcli.store import hub
        from llmcli.store.huberrors import require_online

        rec = self.find(name)
        if rec.kind != "pulled":
            raise StoreError(f"{rec.name!r} was imported from {rec.path}, not pulled: it has no hub revision to "
                             "update", "pull it from the hub instead: llmcli pull OWNER/REPO:QUANT")
        require_online("`llmcli pull --update`")
        # The same files as before (by name), not a fresh default choice: an update never changes the quant.
        spec = f"{rec.repo}/{rec.files[0].name}" if rec.format == "gguf" else rec.repo
        return rec, hub.plan(spec, revision=rec.revision, token=token, fmt=rec.format)

    def update(self, name: str, *, token: str | None = None, tqdm_class=None) -> PullResult | None:
        """Re-pull ``name`` at its revision's current commit; None when it is already there. The old
        files stay until the new ones are verified and the record points at them."""
        rec, p = self.plan_update(name, token=token)
        if p.commit == rec.commit:
            return None
        return self._install(p, rec.name, rec.spec or rec.repo, token=token, tqdm_class=tqdm_class,
                             expect_commit=rec.commit)

    def import_model(self, path: str, name: str | None = None) -> ModelRecord:
        """Register a local GGUF (all parts of a split one) or HF folder without copying it."""
        from llmcli.store import quant as q
        from llmcli.store.metadata import check_gguf_fits

        if "\x00" in path:
            raise UsageError("path contains a NUL byte")
        if name is not None:
            validate_name(name)
        ref = ref_from_path(Path(os.path.abspath(Path(path).expanduser())))
        target = Path(os.path.abspath(ref.path))
        quant = None
        if ref.format == "gguf":
            files = [target]
            info = q.split_info(target.name)
            if info:
                if info[0] != 1:
                    raise UsageError(f"{target.name} is part {info[0]} of a split GGUF",
                                     "import the first part (-00001-of-…)")
                files = sorted(target.parent.glob(q.SPLIT_RE.sub("", target.name) + "-*-of-*.gguf"))
                if len(files) != info[1]:
                    raise UsageError(f"split GGUF {target.name}: found {len(files)} of {info[1]} parts next to it")
            for f in files:
                check_gguf_fits(f)
            quant = q.quant_of(target.name)
        else:
            files = sorted(f for f in target.iterdir() if f.is_file())
        stored = tuple(StoredFile(f.name, str(f), f.stat().st_size) for f in files)
        rec = ModelRecord(validate_name(name or _import_name(target)), "imported", ref.format, str(target),
                          stored, sum(f.size for f in stored), quant)
        self._register(rec)
        return self.find(rec.name)

    def import_remote(self, url: str, model_id: str | None, name: str | None = None) -> ModelRecord:
        """Register a model served at ``url`` (a name for ``-m URL#MODEL_ID``); nothing is contacted.
        The record holds the URL and the model id only, never an API key."""
        from llmcli.store.refs import parse_model_url

        base, in_url = parse_model_url(url)
        if in_url and model_id and in_url != model_id:
            raise UsageError(f"the URL names model {in_url!r} but --model-id says {model_id!r}", "give one of them")
        model_id = model_id or in_url
        if model_id is not None and (not model_id.strip() or "\x00" in model_id):
            raise UsageError("empty or invalid --model-id")
        default = re.sub(r"[^A-Za-z0-9._:@+-]+", "-", model_id or urlsplit(base).hostname or "").strip("-.")
        rec = ModelRecord(validate_name(name or default or "remote"), "remote", url=base, model_id=model_id)
        self._register(rec)
        return self.find(rec.name)

    def _check_free(self, reg: Registry, rec: ModelRecord) -> ModelRecord | None:
        """Refuse a name that is an alias or another model's; returns the record it would replace."""
        if rec.name in reg.aliases:
            raise StoreError(f"{rec.name!r} is already an alias of {reg.aliases[rec.name]!r}",
                             f"choose another name with --as, or `llmcli models alias --delete {rec.name}`")
        old = reg.models.get(rec.name)
        if old is not None and not old.same_source(rec):
            raise StoreError(f"a model named {rec.name!r} already exists ({old.describe_source()})",
                             f"choose another name with --as, or `llmcli models rm {rec.name}` first")
        return old

    def _register(self, rec: ModelRecord, expect_commit: str | None = None) -> ModelRecord | None:
        for f in rec.files:
            if not os.path.exists(f.path):
                raise StoreError(f"cannot register {rec.name!r}: {f.path} vanished",
                                 "another process removed it; run the command again")
        with registry.transaction() as draft:
            old = self._check_free(draft.snapshot(), rec)
            if expect_commit is not None and (old is None or old.commit != expect_commit):
                # Another llmcli removed or re-pulled it while we downloaded: do not overwrite that.
                raise StoreError(f"{rec.name!r} changed in the store during the update",
                                 f"see `llmcli models show {rec.name}` and run the update again if needed")
            if old is not None:
                rec = replace(rec, added=old.added or now(), last_used=old.last_used)
            else:
                rec = replace(rec, added=rec.added or now())
            draft.models[rec.name] = rec
            return old

    # ------------------------------------------------------------ names

    def set_alias(self, alias: str, target: str) -> str:
        validate_name(alias, "alias")
        with registry.transaction() as draft:
            key = draft.snapshot().canonical(target)
            if key is None:
                raise not_found(target)
            if alias in draft.models:
                raise StoreError(f"{alias!r} is already a model name", "choose another alias")
            draft.aliases[alias] = key
            return key

    def delete_alias(self, alias: str) -> str:
        with registry.transaction() as draft:
            if alias not in draft.aliases:
                raise StoreError(f"no alias named {alias!r}", NOT_FOUND_HINT)
            return draft.aliases.pop(alias)

    def set_default(self, name: str | None) -> str | None:
        with registry.transaction() as draft:
            key = None if name is None else draft.snapshot().canonical(name)
            if name is not None and key is None:
                raise not_found(name)
            draft.default = key
            return key

    def touch(self, name: str) -> None:
        """Record that a model was just used."""
        with registry.transaction() as draft:
            key = draft.snapshot().canonical(name)
            if key is not None:
                draft.models[key] = replace(draft.models[key], last_used=now())

    # ------------------------------------------------------------ removing

    def removal_plan(self, names: list[str]) -> list[Removal]:
        """What ``remove`` would do for each name (for a confirmation); unknown names fail here."""
        reg = self.snapshot(for_write=True)
        out = []
        for name in names:
            if name in reg.aliases:
                out.append(Removal(name, "alias", reg.models[reg.aliases[name]]))
            else:
                rec = self.find(name, reg)
                out.append(Removal(rec.name, "model", rec))
        return out

    def remove(self, name: str) -> Removal:
        """Unregister a model (with its aliases and default) and free the HF-cache files only it
        used, or remove just an alias. Imported files are never deleted."""
        from llmcli.store import cache

        with registry.transaction() as draft:
            if name in draft.aliases:
                return Removal(name, "alias", draft.models.get(draft.aliases.pop(name)))
            key = draft.snapshot().canonical(name)
            if key is None:
                raise not_found(name)
            rec = draft.models.pop(key)
            for a in [a for a, t in draft.aliases.items() if t == key]:
                del draft.aliases[a]
            if draft.default == key:
                draft.default = None
            others = list(draft.models.values())
        if rec.kind == "adapter":
            from llmcli.store import adapters

            adapters.remove_folder(rec.path)  # llmcli's own folder in the data dir
            return Removal(key, "model", rec, rec.size)
        return Removal(key, "model", rec, cache.release_files(rec, others))

    def verify(self, name: str) -> Verification:
        """Re-hash a model's files against the hub's sha256 (or git sha1)."""
        from llmcli.store.verify import git_blob_sha1, sha256_file

        rec = self.find(name)
        checks = []
        for f in rec.files:
            if not os.path.exists(f.path):
                checks.append(FileCheck(f.name, "missing", f.path))
            elif f.sha256:
                got = sha256_file(f.path)
                checks.append(FileCheck(f.name, "ok" if got == f.sha256 else "mismatch", f.path, "sha256",
                                        f.sha256, got))
            elif f.blob_id:
                got = git_blob_sha1(f.path)
                checks.append(FileCheck(f.name, "ok" if got == f.blob_id else "mismatch", f.path, "git-sha1",
                                        f.blob_id, got))
            else:
                checks.append(FileCheck(f.name, "unverifiable", f.path, "sha256", None, sha256_file(f.path)))
        return Verification(rec, tuple(checks))

    def partial_downloads(self):
        from llmcli.store import cache

        return cache.partial_downloads()

    def prune(self, dry_run: bool = False) -> PruneReport:
        """Stale partial downloads and blobs no snapshot references; a download in progress is kept."""
        from llmcli.store import cache

        stale = tuple(p for p in cache.partial_downloads() if not p.active)
        orphans = tuple(cache.unreferenced_blobs())
        if not dry_run:
            cache.remove_paths([p.path for p in stale] + [o.path for o in orphans])
            for tmp in registry.registry_path().parent.glob(f".{registry.REGISTRY_FILE}.*.tmp"):
                try:
                    tmp.unlink()  # left by a crash between write and rename
                except OSError:
                    pass
        missing = tuple(r.name for r in self.list() if r.path and not os.path.lexists(r.path))
        return PruneReport(stale, orphans, missing, dry_run)


def _local_files(ref: ModelRef) -> tuple[StoredFile, ...]:
    p = ref.path
    if p.is_dir():
        size = sum(f.stat().st_size for f in p.iterdir() if f.is_file())
    else:
        size = p.stat().st_size
    return (StoredFile(p.name, str(p), size),)


def _import_name(path: Path) -> str:
    from llmcli.store import quant as q

    base = q.SPLIT_RE.sub("", path.name)
    base = re.sub(r"\.gguf$", "", base, flags=re.I)
    base = re.sub(r"[^A-Za-z0-9._:@+-]+", "-", base).strip("-.") or "model"
    return base if base[0].isalnum() else "m" + base
