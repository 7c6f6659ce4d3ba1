"""``pull``: plan, download + verify, then register — in that order, so an interrupted or
failed pull never leaves a registered model behind."""

from __future__ import annotations

from typing import Callable

from llmcli.errors import StoreError
from llmcli.store import cache, hub, registry


def pull(spec: str, *, name: str | None = None, revision: str | None = None, token: str | None = None,
         fmt: str | None = None, tqdm_class=None, notify: Callable[[str], None] = lambda s: None,
         ) -> tuple[str, dict, dict | None]:
    """Returns (name, record, replaced record or None)."""
    if name is not None:
        registry.validate_name(name)
    p = hub.plan(spec, revision=revision, token=token, fmt=fmt)
    name = name or p.default_name
    registry.validate_name(name)
    # Fail before downloading gigabytes if the name is taken by something else.
    data = registry.load()
    if name in data["aliases"]:
        raise StoreError(f"{name!r} is already an alias of {data['aliases'][name]!r}", "choose another name with --as")
    old = data["models"].get(name)
    probe = {"source": "hf", "repo": p.repo_id, "format": p.format}
    if old is not None and not registry.same_source(old, probe):
        raise StoreError(f"a model named {name!r} already exists ({registry.describe_source(old)})",
                         f"choose another name with --as, or `llmcli models rm {name}` first")
    if p.note:
        notify(p.note)
    files = hub.fetch(p, token=token, tqdm_class=tqdm_class)
    record = hub.record_for(p, files)
    record["spec"] = spec
    replaced = registry.register(name, record)
    if replaced is not None:
        # The same model at another revision or quant: free what only the old record used.
        kept = [r for r in registry.load()["models"].values()]
        cache.release_files(replaced, kept)
    return name, record, replaced
