"""GPU exporter: DCGM-named GPU metrics from NVML, or simulated for kwok nodes.

    python -m workers.gpu_exporter [--source simulated|nvml] [--once]

See ``workers/gpu/config.py`` for every flag and environment variable, ``workers/gpu/simulated.py``
for the simulation model. Binds 127.0.0.1 by default; ``--once`` prints the exposition and exits.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, generate_latest, start_http_server

from workers.gpu.busy import BusyRatioFetcher
from workers.gpu.cluster import list_gpu_inventory, load_core_v1
from workers.gpu.config import GpuExporterConfig, load_config
from workers.gpu.readings import GpuCollector, GpuSource
from workers.gpu.serve import STOP_SIGNALS, block_handled_signals, wait_for_signal
from workers.gpu.settings import ConfigError
from workers.gpu.sources import NvmlSource, RefreshingSource, SimulatedSource, SourceUnavailable

log = logging.getLogger("gpu_exporter")


def build_source(cfg: GpuExporterConfig) -> GpuSource:
    if cfg.source == "nvml":
        return NvmlSource(hostname=cfg.node_name)
    core_v1 = load_core_v1(cfg.kubeconfig)
    return SimulatedSource(
        read_inventory=lambda: list_gpu_inventory(core_v1, cfg.api_timeout, cfg.node_selector),
        fetcher=BusyRatioFetcher(cfg.allowed_hosts, cfg.busy_timeout),
        model=cfg.model,
    )


def build_registry(source: GpuSource) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(GpuCollector(source, on_error=lambda exc: log.error("reading GPUs failed: %s", exc)))
    return registry


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(argv)
        source = build_source(cfg)
    except (ConfigError, SourceUnavailable) as exc:
        print(f"gpu_exporter: {exc}", file=sys.stderr)
        return 2
    if cfg.once:
        sys.stdout.write(generate_latest(build_registry(source)).decode())
        return 0
    # Before the server and the reader start their threads, which inherit the mask (see workers/gpu/serve.py).
    block_handled_signals()
    refreshing = RefreshingSource(source, cfg.refresh_seconds, cfg.max_age_seconds)
    refreshing.start()
    server, thread = start_http_server(cfg.port, addr=cfg.bind, registry=build_registry(refreshing))
    log.info("serving source=%s on http://%s:%d/metrics, reading it every %gs", source.name, cfg.bind, cfg.port,
             cfg.refresh_seconds)
    while wait_for_signal() not in STOP_SIGNALS:
        pass  # SIGHUP: nothing to reload, the reader reads the source afresh every interval
    server.shutdown()
    refreshing.stop()
    thread.join(timeout=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
