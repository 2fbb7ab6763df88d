"""Cost exporter configuration.

Two parts:
- the config file (YAML, or JSON, which YAML reads too), rendered by the cost_tracking role from
  ``harness_services``: services, their namespaces, queues and monthly budgets, the pod label that names
  a pod's service, and price overrides. It is re-read when its mtime changes or on SIGHUP, so a budget
  can change without a restart. Format::

      service_label: app.kubernetes.io/name     # pod label whose value is the service name
      jobs_rate_window: 5m                      # PromQL range for completed-jobs rate
      services:
        - {name: stt, namespace: model-serving, queue: stt, monthly_budget_usd: 1500}
      prices:                                   # optional; merged over default_prices.yml per entry
        source: "..."
        as_of: "2025-01-01"
        instance_types: {g2-standard-8: {price_per_hour: 0.85, gpus: 1, gpu_type: NVIDIA-L4}}
        accelerators: {nvidia-tesla-t4: {price_per_gpu_hour: 0.35, gpu_type: Tesla-T4}}

- process settings from flags / environment variables (see ``_OPTIONS``), read once at start.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from workers.cost.pricing import PriceTable, build_price_table, load_default_prices
from workers.gpu import settings
from workers.gpu.settings import ConfigError

DEFAULT_PORT = "9401"
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DURATION = re.compile(r"^[0-9]+(ms|s|m|h|d|w|y)$")
_SERVICE_KEYS = {"name", "namespace", "queue", "monthly_budget_usd"}
_FILE_KEYS = {"service_label", "jobs_rate_window", "services", "prices"}


@dataclass(frozen=True)
class ServiceConfig:
    name: str
    namespace: str
    queue: str
    monthly_budget_usd: float


@dataclass(frozen=True)
class CostConfig:
    service_label: str
    jobs_rate_window: str
    services: tuple[ServiceConfig, ...]
    prices: PriceTable


def _service(index: int, raw: Any) -> ServiceConfig:
    where = f"services[{index}]"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}={raw!r}: must be a mapping with {sorted(_SERVICE_KEYS)}")
    missing = _SERVICE_KEYS - set(raw)
    if missing:
        raise ConfigError(f"{where} ({raw.get('name', '?')}): missing {sorted(missing)}")
    unknown = set(raw) - _SERVICE_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(_SERVICE_KEYS)}")
    for key in ("name", "namespace"):
        if not isinstance(raw[key], str) or not _NAME.match(raw[key]):
            raise ConfigError(f"{where}.{key}={raw[key]!r}: must be a DNS label (lower case, digits, '-')")
    if not isinstance(raw["queue"], str) or not raw["queue"]:
        raise ConfigError(f"{where}.queue={raw['queue']!r}: must be a non-empty string")
    budget = settings.number(f"{where}.monthly_budget_usd", raw["monthly_budget_usd"], strict_minimum=True)
    return ServiceConfig(raw["name"], raw["namespace"], raw["queue"], budget)


def parse_cost_config(raw: Any, default_prices: Mapping[str, Any]) -> CostConfig:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config file: top level must be a mapping with keys {sorted(_FILE_KEYS)}")
    unknown = set(raw) - _FILE_KEYS
    if unknown:
        raise ConfigError(f"config file: unknown keys {sorted(unknown)}; allowed: {sorted(_FILE_KEYS)}")
    services_raw = raw.get("services")
    if not isinstance(services_raw, list) or not services_raw:
        raise ConfigError(f"services={services_raw!r}: must be a non-empty list of services")
    services = tuple(_service(i, s) for i, s in enumerate(services_raw))
    names = [s.name for s in services]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"services: duplicate names {duplicates}")
    label = raw.get("service_label", "app.kubernetes.io/name")
    if not isinstance(label, str) or not label:
        raise ConfigError(f"service_label={label!r}: must be a pod label key")
    window = str(raw.get("jobs_rate_window", "5m"))
    if not _DURATION.match(window):
        raise ConfigError(f"jobs_rate_window={window!r}: must be a Prometheus duration such as 30s, 5m, 1h")
    return CostConfig(label, window, services, build_price_table(default_prices, raw.get("prices")))


def read_cost_config(path: Path, default_prices: Mapping[str, Any] | None = None) -> CostConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"config file {str(path)!r}: {exc.strerror}") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(path)!r}: not valid YAML/JSON: {exc}") from exc
    try:
        return parse_cost_config(raw, default_prices if default_prices is not None else load_default_prices())
    except ConfigError as exc:
        raise ConfigError(f"config file {str(path)!r}: {exc}") from exc


@dataclass(frozen=True)
class ExporterSettings:
    config_file: Path
    state_file: Path
    port: int
    bind: str
    kubeconfig: str | None
    prometheus_url: str | None
    interval: float
    max_gap: float
    api_timeout: float
    once: bool
    forecast_window: float
    clock_start: dt.datetime | None


_OPTIONS = (
    ("--config", "COST_EXPORTER_CONFIG", None, "config file (services, budgets, price overrides)"),
    ("--state-file", "COST_EXPORTER_STATE_FILE", None, "where month-to-date spend is persisted (JSON)"),
    ("--port", "METRICS_PORT", DEFAULT_PORT, "port for /metrics"),
    ("--bind", "METRICS_BIND", "127.0.0.1", "address for /metrics"),
    ("--kubeconfig", "KUBECONFIG", None, "kubeconfig; unset inside a pod means in-cluster config"),
    (
        "--prometheus-url",
        "PROMETHEUS_URL",
        None,
        "Prometheus base URL for completed-job rates; unset: no cost_per_job",
    ),
    ("--interval", "COST_EXPORTER_INTERVAL_SECONDS", "15", "seconds between cost updates"),
    (
        "--max-gap",
        "COST_EXPORTER_MAX_GAP_SECONDS",
        "300",
        "longest interval billed at the last known rate (exporter downtime beyond it is not billed)",
    ),
    ("--api-timeout", "COST_EXPORTER_API_TIMEOUT_SECONDS", "5", "API server and Prometheus request timeout"),
    (
        "--forecast-window",
        "COST_EXPORTER_FORECAST_WINDOW_SECONDS",
        "86400",
        "window the monthly forecast averages the cost rate over (seconds)",
    ),
    (
        "--clock-start",
        "COST_EXPORTER_CLOCK_START",
        None,
        "run as if started at this UTC instant (ISO 8601 with offset, e.g. 2027-01-31T23:59:50Z); "
        "the clock then advances in real time. For tests and rehearsals of month ends; unset: the real clock",
    ),
)


def parse_instant(name: str, raw: str) -> dt.datetime:
    """An ISO 8601 instant with an explicit offset (``Z`` or ``+hh:mm``), as aware UTC."""
    try:
        when = dt.datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise ConfigError(
            f"{name}={raw!r}: must be an ISO 8601 instant with an offset, such as 2027-01-31T23:59:50Z"
        )
    return when.astimezone(dt.UTC)


def load_settings(
    argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None
) -> ExporterSettings:
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(
        prog="python -m workers.cost_exporter",
        description="GPU cost per node and service, budgets and monthly projections, cost per job.",
    )
    for flag, var, default, text in _OPTIONS:
        parser.add_argument(flag, default=env.get(var, default), help=f"{text} [env {var}]")
    parser.add_argument(
        "--once", action="store_true", help="compute once, print the exposition, save nothing"
    )
    args = parser.parse_args(argv)
    if not args.config:
        raise ConfigError("COST_EXPORTER_CONFIG (--config) is not set: give the cost exporter's config file")
    if not args.state_file:
        raise ConfigError(
            "COST_EXPORTER_STATE_FILE (--state-file) is not set: month-to-date spend is kept there"
        )
    state_dir = Path(args.state_file).parent
    if not state_dir.is_dir():
        raise ConfigError(
            f"COST_EXPORTER_STATE_FILE={args.state_file!r}: directory {str(state_dir)!r} does not exist"
        )
    if not args.kubeconfig and "KUBERNETES_SERVICE_HOST" not in env:
        raise ConfigError(
            "KUBECONFIG (--kubeconfig) is not set and this is not a pod: no way to reach the cluster"
        )
    if args.kubeconfig and not os.path.isfile(args.kubeconfig):
        raise ConfigError(f"KUBECONFIG (--kubeconfig)={args.kubeconfig!r}: no such file")
    if args.prometheus_url:
        parts = urlsplit(args.prometheus_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"PROMETHEUS_URL={args.prometheus_url!r}: must be an http(s) URL such as "
                "http://127.0.0.1:9090"
            )
    interval = settings.number(
        "COST_EXPORTER_INTERVAL_SECONDS (--interval)", args.interval, strict_minimum=True
    )
    max_gap = settings.number("COST_EXPORTER_MAX_GAP_SECONDS (--max-gap)", args.max_gap, strict_minimum=True)
    if max_gap < interval:
        raise ConfigError(
            f"COST_EXPORTER_MAX_GAP_SECONDS={args.max_gap!r}: must be >= the interval ({args.interval})"
        )
    return ExporterSettings(
        config_file=Path(args.config),
        state_file=Path(args.state_file),
        port=settings.port("METRICS_PORT (--port)", args.port),
        bind=args.bind,
        kubeconfig=args.kubeconfig,
        prometheus_url=args.prometheus_url.rstrip("/") if args.prometheus_url else None,
        interval=interval,
        max_gap=max_gap,
        api_timeout=settings.number(
            "COST_EXPORTER_API_TIMEOUT_SECONDS (--api-timeout)", args.api_timeout, strict_minimum=True
        ),
        once=args.once,
        forecast_window=settings.number(
            "COST_EXPORTER_FORECAST_WINDOW_SECONDS (--forecast-window)", args.forecast_window, strict_minimum=True
        ),
        clock_start=(
            parse_instant("COST_EXPORTER_CLOCK_START (--clock-start)", args.clock_start)
            if args.clock_start
            else None
        ),
    )
