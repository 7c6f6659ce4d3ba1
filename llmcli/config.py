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

from llmcli.errors import LlmcliError, UsageError
from llmcli.params import CONFIG_KEYS, PARAMS, Param

APP = "llmcli"


class ConfigError(LlmcliError):
    """The config file named or found cannot be read (exit 1)."""


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


DEFAULT_CTX_CAP = PARAMS["ctx"].default  # like ollama; a model's full trained window can need many GB of KV cache


@dataclass
class Settings:
    general: dict = field(default_factory=dict)  # top-level keys: model, backend, ctx, …
    sampling: dict = field(default_factory=dict)  # the [sampling] table
    source: dict = field(default_factory=dict)  # key -> where the value came from

    def get(self, name: str, default=None):
        """A parameter's configured value (already typed and range-checked), else ``default``."""
        return {**self.general, **self.sampling}.get(name, default)


def _put(s: Settings, p: Param, value, origin: str) -> None:
    (s.sampling if p.section == "sampling" else s.general)[p.name] = value
    s.source[p.name] = origin


def parse_config(text: str, origin: str) -> Settings:
    """Pure: TOML text -> Settings, every value checked by the parameter table. Unknown keys and
    wrongly typed values are errors, so typos do not pass silently."""
    try:
        raw = tomllib.loads(text)
    except (ValueError, RecursionError) as e:  # TOMLDecodeError, or an integer too long to convert
        raise UsageError(f"{origin} is not valid TOML: {e}", "fix or delete the file") from None
    s = Settings()
    general = [k for k, p in CONFIG_KEYS.items() if p.section == "general"]
    sampling = [k for k, p in CONFIG_KEYS.items() if p.section == "sampling"]
    for key, value in raw.items():
        if key == "sampling":
            if not isinstance(value, dict):
                raise UsageError(f"{origin}: sampling must be a table ([sampling])", "see docs/usage.md")
            for k, v in value.items():
                if k not in sampling:
                    raise UsageError(f"{origin}: unknown sampling key {k!r}", f"known keys: {', '.join(sampling)}")
                _put(s, CONFIG_KEYS[k], _checked(CONFIG_KEYS[k], v, origin), origin)
        elif key in general:
            _put(s, CONFIG_KEYS[key], _checked(CONFIG_KEYS[key], value, origin), origin)
        else:
            where = " (sampling keys go under [sampling])" if key in sampling else ""
            raise UsageError(f"{origin}: unknown key {key!r}{where}", f"known keys: {', '.join(general)}, [sampling]")
    return s


def _checked(p: Param, value, origin: str):
    try:
        return p.check(value, f"{p.name} =")
    except UsageError as e:
        raise UsageError(f"{origin}: {e.message}", "fix the value in the config file") from None


def env_settings(environ: dict[str, str]) -> Settings:
    """Pure: LLMCLI_TEMPERATURE=0.2, LLMCLI_MODEL=..., etc.; an error names the variable."""
    s = Settings()
    for p in CONFIG_KEYS.values():
        if environ.get(p.env, "") != "":
            _put(s, p, p.parse(environ[p.env], p.env), p.env)
    return s


def merge(*layers: Settings) -> Settings:
    out = Settings()
    for layer in layers:
        out.general.update(layer.general)
        out.sampling.update(layer.sampling)
        out.source.update(layer.source)
    return out


def load_settings() -> Settings:
    """The config file (when there is one) merged with the environment.

    ``LLMCLI_CONFIG`` naming a missing file or anything but a file is an error (exit 1): the
    user asked for that file. The default path may be absent, but not a folder."""
    explicit = bool(os.environ.get("LLMCLI_CONFIG"))
    path = config_path()
    file_layer = Settings()
    if explicit or os.path.lexists(path):
        if not path.is_file():
            what = "does not exist" if not os.path.lexists(path) else "is not a file"
            where = "LLMCLI_CONFIG names" if explicit else "the config file"
            raise ConfigError(f"cannot read config file {path}: it {what}",
                              f"{where} it: unset LLMCLI_CONFIG or point it at a TOML file" if explicit else
                              "remove it or make it a TOML file")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read config file {path}: {getattr(e, 'strerror', None) or e}") from None
        file_layer = parse_config(text, str(path))
    return merge(file_layer, env_settings(dict(os.environ)))
