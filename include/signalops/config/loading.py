"""Loading the settings: defaults < YAML file < ``SIGNALOPS_*`` environment variables.

The YAML file and the environment are merged into one nested mapping, remembering where
each value came from, and validated once as :class:`~signalops.config.settings.Settings`.
An unknown name (a YAML key or a ``SIGNALOPS_*`` variable that names no setting) fails
validation like a bad value: the :class:`ConfigError` names the setting and its source.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from signalops.config.base import ConfigError
from signalops.config.settings import Settings

ENV_PREFIX = "SIGNALOPS_"
CONFIG_ENV = "SIGNALOPS_CONFIG"
DEFAULT_CONFIG_FILE = "signalops.yaml"


def load_settings(
    env: Mapping[str, str] | None = None, config_file: str | Path | None = None
) -> Settings:
    """Build the settings from defaults, the YAML file and the environment."""
    env = os.environ if env is None else env
    merged: dict[str, Any] = {}
    origins: dict[tuple[str, ...], str] = {}

    path = _config_path(env, config_file)
    if path is not None:
        file_values = _read_yaml(path)
        _merge(merged, file_values, origins, f"file {path}")

    env_values: dict[str, Any] = {}
    env_origins: dict[tuple[str, ...], str] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        keys = tuple(part.lower() for part in name[len(ENV_PREFIX) :].split("__"))
        node = env_values
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"environment variable {name} conflicts with another setting")
        node[keys[-1]] = None if value == "" else value
        env_origins[keys] = f"environment variable {name}"
    _merge(merged, env_values, origins, "environment", env_origins)

    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            loc = tuple(str(part) for part in error["loc"])
            source = _find_origin(origins, loc)
            setting = ".".join(loc) or "(settings)"
            got = f" (got {error['input']!r})" if loc and "input" in error else ""
            lines.append(f"  {setting}: {error['msg']}{got} [from {source}]")
        raise ConfigError("invalid signalops settings:\n" + "\n".join(lines)) from None


def _config_path(env: Mapping[str, str], config_file: str | Path | None) -> Path | None:
    if config_file is not None:
        path = Path(config_file)
    elif env.get(CONFIG_ENV):
        path = Path(env[CONFIG_ENV])
    else:
        default = Path(DEFAULT_CONFIG_FILE)
        return default if default.is_file() else None
    if not path.is_file():
        raise ConfigError(f"config file {path} (from {CONFIG_ENV} or argument) does not exist")
    return path


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def _merge(
    into: dict[str, Any],
    values: Mapping[str, Any],
    origins: dict[tuple[str, ...], str],
    source: str,
    detailed: Mapping[tuple[str, ...], str] | None = None,
    prefix: tuple[str, ...] = (),
) -> None:
    for key, value in values.items():
        path = (*prefix, str(key))
        if isinstance(value, Mapping) and isinstance(into.get(key, {}), dict):
            _merge(into.setdefault(key, {}), value, origins, source, detailed, path)
        else:
            into[key] = value
            origins[path] = (detailed or {}).get(path, source)


def _find_origin(origins: Mapping[tuple[str, ...], str], loc: tuple[str, ...]) -> str:
    for size in range(len(loc), 0, -1):
        if loc[:size] in origins:
            return origins[loc[:size]]
    # An error on a whole section (e.g. an unknown one) names what set its keys.
    below = sorted({source for key, source in origins.items() if key[: len(loc)] == loc})
    return ", ".join(below) if below else "defaults"
