"""Read and validate settings from the environment (and an optional flat YAML file).

Every process validates its whole configuration before it does anything else, and a bad value stops it
with a message naming the variable, the value it got and what is allowed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

import yaml

CONFIG_FILE_VAR = "WORKERS_CONFIG_FILE"


class ConfigError(ValueError):
    """A setting has a value the process cannot run with."""

    def __init__(self, name: str, value: object, allowed: str) -> None:
        self.name = name
        self.value = value
        self.allowed = allowed
        super().__init__(f"invalid configuration: {name}={value!r}; allowed: {allowed}")


def load_settings(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment variables over the optional YAML file named by WORKERS_CONFIG_FILE.

    The YAML file is a flat mapping with the same keys as the environment variables, so the two sources
    never disagree on names; the environment wins where both set a key.
    """
    env = dict(os.environ if environ is None else environ)
    path = env.get(CONFIG_FILE_VAR, "").strip()
    if not path:
        return env
    try:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(CONFIG_FILE_VAR, path, f"a readable YAML file ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(CONFIG_FILE_VAR, path, f"valid YAML ({exc})") from exc
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict) or not all(isinstance(k, str) for k in loaded):
        raise ConfigError(CONFIG_FILE_VAR, path, "a YAML mapping of VARIABLE: value")
    merged = {key: "" if value is None else str(value) for key, value in loaded.items()}
    merged.update(env)
    return merged


class Settings:
    """Typed accessors over a mapping of raw strings; each raises ConfigError on a bad value."""

    def __init__(self, raw: Mapping[str, str]) -> None:
        self._raw = raw

    def text(self, name: str, default: str) -> str:
        value = self._raw.get(name)
        return default if value is None or value.strip() == "" else value.strip()

    def optional(self, name: str) -> str | None:
        value = self._raw.get(name)
        return None if value is None or value.strip() == "" else value.strip()

    def integer(self, name: str, default: int, minimum: int, maximum: int) -> int:
        raw = self._raw.get(name)
        if raw is None or raw.strip() == "":
            return default
        try:
            value = int(raw.strip())
        except ValueError:
            raise ConfigError(name, raw, f"an integer from {minimum} to {maximum}") from None
        if not minimum <= value <= maximum:
            raise ConfigError(name, raw, f"an integer from {minimum} to {maximum}")
        return value

    def number(self, name: str, default: float, minimum: float, maximum: float) -> float:
        raw = self._raw.get(name)
        if raw is None or raw.strip() == "":
            return default
        try:
            value = float(raw.strip())
        except ValueError:
            raise ConfigError(name, raw, f"a number from {minimum} to {maximum}") from None
        if not minimum <= value <= maximum:
            raise ConfigError(name, raw, f"a number from {minimum} to {maximum}")
        return value

    def port(self, name: str, default: int) -> int:
        """A TCP port; 0 asks the OS for a free one (the process logs the port it got)."""
        return self.integer(name, default, 0, 65535)

    def choice(self, name: str, default: str, choices: Iterable[str]) -> str:
        allowed = tuple(choices)
        value = self.text(name, default)
        if value not in allowed:
            raise ConfigError(name, value, "one of " + ", ".join(allowed))
        return value

    def redis_url(self, name: str, default: str) -> str:
        value = self.text(name, default)
        parts = urlsplit(value)
        if parts.scheme not in ("redis", "rediss", "unix") or (parts.scheme != "unix" and not parts.hostname):
            # The URL may carry a password: the error names the variable but shows it redacted.
            shown = value if parts.password is None else value.replace(parts.password, "***")
            raise ConfigError(name, shown,
                              "a URL like redis://127.0.0.1:6379/0 (schemes redis, rediss, unix)")
        return value

    def name(self, name: str, default: str) -> str:
        """A queue or service name: letters, digits, '-', '_' and '.', no ':' (BullMQ's key separator)."""
        value = self.text(name, default)
        if not value or not all(c.isalnum() or c in "-_." for c in value):
            raise ConfigError(name, value, "a non-empty name of letters, digits, '-', '_' or '.'")
        return value

    def name_list(self, name: str, default: str) -> list[str]:
        value = self.text(name, default)
        items = [item.strip() for item in value.split(",") if item.strip()]
        if not items:
            raise ConfigError(name, value, "a comma-separated list with at least one entry")
        return items
