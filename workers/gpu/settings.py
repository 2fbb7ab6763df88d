"""Small validators shared by the exporters' configuration: each error names the setting, the value
it got and what is allowed."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable


class ConfigError(ValueError):
    pass


def choice(setting: str, raw: str, allowed: Iterable[str]) -> str:
    allowed = tuple(allowed)
    if raw not in allowed:
        raise ConfigError(f"{setting}={raw!r}: allowed values are {', '.join(allowed)}")
    return raw


def port(setting: str, raw: str) -> int:
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{setting}={raw!r}: must be a TCP port number 1-65535") from None
    if not 1 <= value <= 65535:
        raise ConfigError(f"{setting}={raw!r}: must be a TCP port number 1-65535")
    return value


def number(
    setting: str,
    raw: object,
    minimum: float = 0.0,
    maximum: float | None = None,
    strict_minimum: bool = False,
) -> float:
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"{setting}={raw!r}: must be a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(f"{setting}={raw!r}: must be a finite number")
    too_small = value <= minimum if strict_minimum else value < minimum
    if too_small:
        raise ConfigError(f"{setting}={raw!r}: must be {'>' if strict_minimum else '>='} {minimum:g}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{setting}={raw!r}: must be <= {maximum:g}")
    return value


def host_list(setting: str, raw: str) -> tuple[str, ...]:
    """Host names, addresses and networks (CIDR), comma separated; a malformed network is named."""
    hosts = tuple(h.strip() for h in raw.split(",") if h.strip())
    if not hosts:
        raise ConfigError(
            f"{setting}={raw!r}: give at least one host name, address or network (CIDR), comma separated"
        )
    for host in hosts:
        if "/" in host:
            try:
                ipaddress.ip_network(host, strict=True)
            except ValueError as exc:
                raise ConfigError(
                    f"{setting}={raw!r}: {host!r} is not a network address with a prefix ({exc}), e.g. 10.244.0.0/24"
                ) from None
    return hosts
