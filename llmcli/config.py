"""Where llmcli keeps things and which defaults apply.

Precedence, lowest to highest: built-in defaults < config file < ``LLMCLI_*``
environment variables < command-line flags. Everything here is pure except the
functions that read the file or the environment.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from llmcli.errors import UsageError

APP = "llmcli"

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def _dir(env: str, kind: str) -> Path:
    override = os.environ.get(env)
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(getattr(platformdirs, f"user_{kind}_dir")(APP, appauthor=False))


def config_dir() -> Path:
    return _dir("LLMCLI_CONFIG_DIR", "config")


def data_dir() -> Path:
    return _dir("LLMCLI_DATA_DIR", "data")


def cache_dir() -> Path:
    return _dir("LLMCLI_CACHE_DIR", "cache")


def config_path() -> Path:
    return Path(os.environ["LLMCLI_CONFIG"]).expanduser() if os.environ.get("LLMCLI_CONFIG") else config_dir() / "config.toml"


# name -> type, for the [sampling] table, LLMCLI_<NAME> variables and validation.
SAMPLING_KEYS: dict[str, type] = {
    "max_tokens": int,
    "temperature": float,
    "top_k": int,
    "top_p": float,
    "min_p": float,
    "repeat_penalty": float,
    "no_repeat_ngram_size": int,
    "seed": int,
}
GENERAL_KEYS: dict[str, type] = {"model": str, "backend": str, "device": str, "ctx": int, "threads": int,
                                 "think": str, "dtype": str,
                                 # the run log (docs/logs.md): on/off, and its size cap in MB
                                 "log": bool, "log_max_mb": float}

DEFAULT_CTX_CAP = 4096  # like ollama; a model's full trained window can need many GB of KV cache


@dataclass
class Settings:
    general: dict = field(default_factory=dict)
    sampling: dict = field(default_factory=dict)
    source: dict = field(default_factory=dict)  # key -> where the value came from


def _coerce(name: str, kind: type, value, origin: str):
    if kind is bool:
        word = str(value).strip().lower() if not isinstance(value, bool) else value
        if word in (True, "1", "true", "yes", "on"):
            return True
        if word in (False, "0", "false", "no", "off"):
            return False
        raise UsageError(f"{origin}: {name} must be true or false, got {value!r}")
    try:
        if kind is int and isinstance(value, bool):
            raise ValueError
        value = kind(value)
    except (TypeError, ValueError):
        raise UsageError(f"{origin}: {name} must be {kind.__name__}, got {value!r}") from None
    if name == "log_max_mb" and not 0 < value < float("inf"):
        raise UsageError(f"{origin}: log_max_mb must be a number > 0, got {value!r}")
    return value


def parse_config(text: str, origin: str) -> Settings:
    """Pure: TOML text -> Settings. Unknown keys are errors, so typos do not pass silently."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{origin} is not valid TOML: {e}", "fix or delete the file") from None
    s = Settings()
    for key, value in raw.items():
        if key == "sampling" and isinstance(value, dict):
            for k, v in value.items():
                if k not in SAMPLING_KEYS:
                    raise UsageError(f"{origin}: unknown sampling key {k!r}",
                                     f"known keys: {', '.join(SAMPLING_KEYS)}")
                s.sampling[k] = _coerce(k, SAMPLING_KEYS[k], v, origin)
                s.source[k] = origin
        elif key in GENERAL_KEYS:
            s.general[key] = _coerce(key, GENERAL_KEYS[key], value, origin)
            s.source[key] = origin
        else:
            raise UsageError(f"{origin}: unknown key {key!r}",
                             f"known keys: {', '.join(GENERAL_KEYS)}, [sampling]")
    return s


def env_settings(environ: dict[str, str]) -> Settings:
    """Pure: LLMCLI_TEMPERATURE=0.2, LLMCLI_MODEL=..., etc."""
    s = Settings()
    for k, kind in {**GENERAL_KEYS, **SAMPLING_KEYS}.items():
        var = "LLMCLI_" + k.upper()
        if var in environ and environ[var] != "":
            value = _coerce(k, kind, environ[var], var)
            (s.sampling if k in SAMPLING_KEYS else s.general)[k] = value
            s.source[k] = var
    return s


def merge(*layers: Settings) -> Settings:
    out = Settings()
    for layer in layers:
        out.general.update(layer.general)
        out.sampling.update(layer.sampling)
        out.source.update(layer.source)
    return out


def load_settings() -> Settings:
    path = config_path()
    file_layer = Settings()
    if path.is_file():
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"cannot read config file {path}: {e}") from None
        file_layer = parse_config(text, str(path))
    return merge(file_layer, env_settings(dict(os.environ)))
