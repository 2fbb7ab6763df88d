"""The cost exporter's update step and its Prometheus collector.

``CostExporter.update()`` runs on a timer (and at once on SIGHUP): reload the config file if it changed,
read the cluster, price nodes and services, read completed-job rates, advance and save the ledger, and
publish an immutable ``Published`` snapshot. The collector only reads the latest snapshot, so a scrape
never waits on the cluster or Prometheus.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from workers.cost.config import CostConfig, read_cost_config
from workers.cost.ledger import Ledger, Rate
from workers.cost.model import CostSnapshot, compute_costs, cost_per_job
from workers.gpu.cluster import GpuInventory
from workers.gpu.settings import ConfigError

log = logging.getLogger(__name__)

CONTRACT_METRICS = (
    "gpu_cost_per_hour",
    "service_cost_per_hour",
    "service_cost_per_minute",
    "monthly_cost_projection",
    "budget_utilization_percentage",
    "cost_per_job",
    "total_gpu_hours",
)
EXTRA_METRICS = (
    "monthly_cost_forecast",
    "budget_forecast_utilization_percentage",
    "service_cost_month_to_date",
    "service_monthly_budget",
    "cost_exporter_price_table_info",
    "cost_exporter_last_update_timestamp_seconds",
    "cost_exporter_cluster_read_success",
    "cost_exporter_prometheus_query_success",
    "cost_exporter_config_reload_success",
    "cost_exporter_unpriced_nodes",
    "cost_exporter_unattributed_pods",
    "dubbing_cost_per_media_minute",
)
# The services a dubbing job runs through (workers/dubbing/flow.py STAGES): each one's cost per dubbed media minute.
DUBBING_STAGES = ("stt", "mt", "tts", "lipsync")
METRIC_NAMES = CONTRACT_METRICS + EXTRA_METRICS


class ConfigWatcher:
    """Re-reads the config file when its mtime or size changes, or when ``request_reload()`` was called
    (SIGHUP). A bad new file keeps the previous config and marks the reload failed."""

    def __init__(self, path: Path, loader: Callable[[Path], CostConfig] = read_cost_config) -> None:
        self.path = path
        self._loader = loader
        self._stamp = self._stat()
        self.config = loader(path)
        self.reload_ok = True
        self._forced = threading.Event()

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def request_reload(self) -> None:
        self._forced.set()

    def refresh(self) -> bool:
        """True when a new config was loaded."""
        stamp = self._stat()
        if stamp == self._stamp and not self._forced.is_set():
            return False
        self._forced.clear()
        self._stamp = stamp
        try:
            self.config = self._loader(self.path)
        except ConfigError as exc:
            self.reload_ok = False
            log.error("keeping the previous config: %s", exc)
            return False
        self.reload_ok = True
        log.info("config reloaded from %s", self.path)
        return True


@dataclass(frozen=True)
class Published:
    config: CostConfig
    snapshot: CostSnapshot | None
    job_rates: dict[str, float] | None
    month_to_date: dict[str, float]
    projection: dict[str, float]
    forecast: dict[str, float]
    gpu_hours: dict[str, dict[str, float]]
    updated: dt.datetime | None
    cluster_ok: bool
    prometheus_ok: bool | None
    config_ok: bool
    # Dubbed media seconds per second (dubbing_media_seconds_total's rate); None: not read or no orchestrator.
    media_rate: float | None = None


class CostExporter:
    def __init__(
        self,
        watcher: ConfigWatcher,
        ledger: Ledger,
        read_inventory: Callable[[], GpuInventory],
        read_job_rates: Callable[[CostConfig], dict[str, float]] | None,
        state_file: Path | None,
        max_gap_seconds: float,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        read_media_rate: Callable[[CostConfig], float | None] | None = None,
    ) -> None:
        self._read_media_rate = read_media_rate
        self.watcher = watcher
        self.ledger = ledger
        self._read_inventory = read_inventory
        self._read_job_rates = read_job_rates
        self._state_file = state_file
        self._max_gap = max_gap_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._reported: set[str] = set()
        self.published = self._publish(None, None, None, cluster_ok=False)

    def _publish(
        self,
        snapshot: CostSnapshot | None,
        rates: dict[str, float] | None,
        now: dt.datetime | None,
        cluster_ok: bool,
        prometheus_ok: bool | None = None,
        media_rate: float | None = None,
    ) -> Published:
        cfg = self.watcher.config
        when = now or self._clock()
        names = [s.name for s in cfg.services]
        return Published(
            config=cfg,
            snapshot=snapshot,
            job_rates=rates,
            month_to_date={n: self.ledger.month_to_date(n) for n in names},
            projection={n: self.ledger.projection(n, when) for n in names},
            forecast={n: self.ledger.forecast(n, when) for n in names},
            gpu_hours={n: self.ledger.gpu_hours(n) for n in names},
            updated=now,
            cluster_ok=cluster_ok,
            prometheus_ok=prometheus_ok,
            config_ok=self.watcher.reload_ok,
            media_rate=media_rate,
        )

    def update(self) -> Published:
        with self._lock:
            self.watcher.refresh()
            cfg = self.watcher.config
            try:
                inventory = self._read_inventory()
            except Exception as exc:  # any API failure: keep the ledger, say so in a metric
                log.error("reading the cluster failed, costs not updated: %s", exc)
                self.published = self._publish(
                    self.published.snapshot,
                    self.published.job_rates,
                    self.published.updated,
                    cluster_ok=False,
                    prometheus_ok=self.published.prometheus_ok,
                    media_rate=self.published.media_rate,
                )
                return self.published
            snapshot = compute_costs(inventory, cfg.prices, cfg.services, cfg.service_label)
            for problem in set(snapshot.problems) - self._reported:
                log.warning("%s", problem)  # once when it appears, not on every update
            self._reported = set(snapshot.problems)
            rates: dict[str, float] | None = None
            prometheus_ok: bool | None = None
            if self._read_job_rates is not None:
                try:
                    rates = self._read_job_rates(cfg)
                    prometheus_ok = True
                except Exception as exc:  # cost per job is skipped, the rest goes on
                    log.warning("completed-job rates unavailable: %s", exc)
                    prometheus_ok = False
            media_rate: float | None = None
            if self._read_media_rate is not None and prometheus_ok is not False:
                try:
                    media_rate = self._read_media_rate(cfg)
                except Exception as exc:  # the cost per dubbed minute is skipped, the rest goes on
                    log.warning("dubbed media rate unavailable: %s", exc)
                    prometheus_ok = False
            now = self._clock()
            self.ledger.advance(
                now,
                {n: Rate(c.cost_per_hour, c.gpus_by_type) for n, c in snapshot.services.items()},
                self._max_gap,
            )
            if self._state_file is not None:
                self.ledger.save(self._state_file)
            self.published = self._publish(snapshot, rates, now, cluster_ok=True, prometheus_ok=prometheus_ok,
                                           media_rate=media_rate)
            return self.published


def _gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


class CostCollector(Collector):
    def __init__(self, source: Callable[[], Published]) -> None:
        self._source = source

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())

    def collect(self) -> Iterator[GaugeMetricFamily]:
        p = self._source()
        cfg = p.config
        currency = cfg.prices.currency
        info = _gauge(
            "cost_exporter_price_table_info", "Price table in use (value 1).", ["source", "as_of", "currency"]
        )
        info.add_metric([cfg.prices.source, cfg.prices.as_of, currency], 1)
        yield info
        health = {
            "cost_exporter_cluster_read_success": (
                "1 if the last read of nodes and pods succeeded.",
                p.cluster_ok,
            ),
            "cost_exporter_config_reload_success": ("1 if the config file last read is valid.", p.config_ok),
        }
        if p.prometheus_ok is not None:
            health["cost_exporter_prometheus_query_success"] = (
                "1 if the last completed-jobs query to Prometheus succeeded.",
                p.prometheus_ok,
            )
        for name, (doc, ok) in health.items():
            g = _gauge(name, doc, [])
            g.add_metric([], 1 if ok else 0)
            yield g
        if p.updated is not None:
            g = _gauge("cost_exporter_last_update_timestamp_seconds", "Time of the last cost update.", [])
            g.add_metric([], p.updated.timestamp())
            yield g
        yield from self._budgets(p, currency)
        if p.snapshot is None:
            return
        yield from self._costs(p, currency)

    def _budgets(self, p: Published, currency: str) -> Iterator[GaugeMetricFamily]:
        mtd = _gauge(
            "service_cost_month_to_date", f"GPU spend this calendar month (UTC), {currency}.", ["service"]
        )
        budget = _gauge("service_monthly_budget", f"Monthly GPU budget, {currency}.", ["service"])
        proj = _gauge(
            "monthly_cost_projection",
            f"Month-to-date spend + current rate x hours left in the month, {currency}.",
            ["service"],
        )
        util = _gauge(
            "budget_utilization_percentage",
            "Month-to-date spend / monthly budget x 100 (actual spend, no projection).",
            ["service"],
        )
        forecast = _gauge(
            "monthly_cost_forecast",
            "Month-to-date spend + the cost rate averaged over the forecast window "
            f"(COST_EXPORTER_FORECAST_WINDOW_SECONDS) x hours left in the month, {currency}.",
            ["service"],
        )
        forecast_util = _gauge(
            "budget_forecast_utilization_percentage", "Monthly forecast / monthly budget x 100.", ["service"]
        )
        hours = _gauge(
            "total_gpu_hours",
            "Physical GPU-hours held by the service's pods (cumulative).",
            ["service", "gpu_type"],
        )
        for s in p.config.services:
            mtd.add_metric([s.name], p.month_to_date[s.name])
            budget.add_metric([s.name], s.monthly_budget_usd)
            proj.add_metric([s.name], p.projection[s.name])
            util.add_metric([s.name], 100.0 * p.month_to_date[s.name] / s.monthly_budget_usd)
            forecast.add_metric([s.name], p.forecast[s.name])
            forecast_util.add_metric([s.name], 100.0 * p.forecast[s.name] / s.monthly_budget_usd)
            for gpu_type, value in sorted(p.gpu_hours[s.name].items()):
                hours.add_metric([s.name, gpu_type], value)
        yield from (mtd, budget, proj, util, forecast, forecast_util, hours)

    def _costs(self, p: Published, currency: str) -> Iterator[GaugeMetricFamily]:
        snap = p.snapshot
        assert snap is not None
        gpu = _gauge(
            "gpu_cost_per_hour",
            f"Price of one GPU on the node per hour, {currency}.",
            ["node", "instance_type", "gpu_type"],
        )
        for n in snap.nodes:
            gpu.add_metric([n.node, n.instance_type, n.gpu_type], n.gpu_price_per_hour)
        per_hour = _gauge(
            "service_cost_per_hour",
            f"GPU cost of the service's pods by request share, {currency}/h.",
            ["service", "namespace"],
        )
        per_minute = _gauge(
            "service_cost_per_minute", f"As service_cost_per_hour, {currency}/min.", ["service", "namespace"]
        )
        per_job = _gauge(
            "cost_per_job",
            f"Service cost per second / completed jobs per second, {currency}.",
            ["service", "queue_name"],
        )
        per_media_minute = _gauge(
            "dubbing_cost_per_media_minute",
            f"A dubbing stage service's cost per minute of source media dubbed: its cost per second / dubbed "
            f"media seconds per second x 60, {currency} (while dubbing jobs finish).",
            ["service"],
        )
        for s in p.config.services:
            c = snap.services[s.name]
            if s.name in DUBBING_STAGES and p.media_rate:
                per_media_minute.add_metric([s.name], c.cost_per_hour / 3600.0 / p.media_rate * 60.0)
            per_hour.add_metric([s.name, s.namespace], c.cost_per_hour)
            per_minute.add_metric([s.name, s.namespace], c.cost_per_hour / 60.0)
            if p.job_rates is not None:
                value = cost_per_job(c.cost_per_hour, p.job_rates.get(s.name))
                if value is not None:
                    per_job.add_metric([s.name, s.queue], value)
        unpriced = _gauge("cost_exporter_unpriced_nodes", "GPU nodes whose instance type has no price.", [])
        unpriced.add_metric([], len(snap.unpriced_nodes))
        unattributed = _gauge(
            "cost_exporter_unattributed_pods",
            "Running GPU pods on priced nodes that belong to no configured service.",
            [],
        )
        unattributed.add_metric([], snap.unattributed_pods)
        yield from (gpu, per_hour, per_minute, per_job, per_media_minute, unpriced, unattributed)
