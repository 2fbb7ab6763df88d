"""Cost exporter: GPU cost per node and service, budgets, monthly projections and cost per job.

    python -m workers.cost_exporter --config cost-exporter.yml --state-file cost-state.json [--once]

Cost is attributed by request share (see ``workers/cost/model.py``): under time slicing DCGM cannot
isolate per-pod usage, so usage-based attribution is not possible. Settings and the config file format
are in ``workers/cost/config.py``; the price table in ``workers/cost/default_prices.yml``.
SIGHUP (or any change of the config file's mtime) re-reads the config, so budgets change without a
restart. Month-to-date spend and the forecast's rate history survive restarts in the state file.
``--clock-start`` (``COST_EXPORTER_CLOCK_START``) runs the exporter as of another date, for month-end tests.
"""

from __future__ import annotations

import datetime as dt
import logging
import signal
import sys
import time
from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry, generate_latest, start_http_server

from workers.cost.config import CostConfig, ExporterSettings, load_settings
from workers.cost.exporter import ConfigWatcher, CostCollector, CostExporter
from workers.cost.jobs import PrometheusJobRates
from workers.cost.ledger import Ledger, StateFileError
from workers.gpu.cluster import list_gpu_inventory, load_core_v1
from workers.gpu.serve import STOP_SIGNALS, block_handled_signals, wait_for_signal
from workers.gpu.settings import ConfigError

log = logging.getLogger("cost_exporter")


def settable_clock(start: dt.datetime | None) -> Callable[[], dt.datetime]:
    """The real UTC clock, or one that reads ``start`` at this call and then advances in real time
    (monotonic, so a host clock step does not move it)."""
    if start is None:
        return lambda: dt.datetime.now(dt.UTC)
    t0 = time.monotonic()
    return lambda: start + dt.timedelta(seconds=time.monotonic() - t0)


def build_exporter(cfg: ExporterSettings) -> CostExporter:
    watcher = ConfigWatcher(cfg.config_file)
    ledger = Ledger.load(cfg.state_file)
    ledger.forecast_window_seconds = cfg.forecast_window
    core_v1 = load_core_v1(cfg.kubeconfig)

    read_job_rates = read_media_rate = None
    if cfg.prometheus_url:
        url = cfg.prometheus_url

        def read_job_rates(config: CostConfig) -> dict[str, float]:
            return PrometheusJobRates(url, config.jobs_rate_window, cfg.api_timeout).fetch()

        def read_media_rate(config: CostConfig) -> float | None:
            return PrometheusJobRates(url, config.jobs_rate_window, cfg.api_timeout).media_rate()

    return CostExporter(
        watcher=watcher,
        ledger=ledger,
        read_inventory=lambda: list_gpu_inventory(core_v1, cfg.api_timeout),
        read_job_rates=read_job_rates,
        state_file=None if cfg.once else cfg.state_file,
        max_gap_seconds=cfg.max_gap,
        clock=settable_clock(cfg.clock_start),
        read_media_rate=read_media_rate,
    )


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_settings(argv)
        exporter = build_exporter(cfg)
    except (ConfigError, StateFileError) as exc:
        print(f"cost_exporter: {exc}", file=sys.stderr)
        return 2
    if cfg.clock_start is not None:
        log.warning("clock set: running as of %s (COST_EXPORTER_CLOCK_START), not the real time",
                    cfg.clock_start.isoformat())
    registry = CollectorRegistry()
    registry.register(CostCollector(lambda: exporter.published))
    if cfg.once:
        exporter.update()
        sys.stdout.write(generate_latest(registry).decode())
        return 0

    # Before the server starts its threads, which inherit the mask (see workers/gpu/serve.py).
    block_handled_signals()
    exporter.update()
    server, thread = start_http_server(cfg.port, addr=cfg.bind, registry=registry)
    log.info("serving on http://%s:%d/metrics, updating every %gs", cfg.bind, cfg.port, cfg.interval)
    next_update = time.monotonic() + cfg.interval
    while (sig := wait_for_signal(next_update - time.monotonic())) not in STOP_SIGNALS:
        if sig == signal.SIGHUP:
            exporter.watcher.request_reload()
        exporter.update()
        next_update = time.monotonic() + cfg.interval
    server.shutdown()
    thread.join(timeout=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
