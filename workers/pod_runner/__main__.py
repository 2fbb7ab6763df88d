"""python -m workers.pod_runner: run one host process per Running pod on the simulated nodes.

Settings (environment): KUBECONFIG (required), NAMESPACES (model-serving), LABEL_SELECTOR
(harness.local/run-on-host=true), NODE_SELECTOR (harness.local/simulated=true), WORKDIR (cwd),
STATE_DIR, FILE_SD_PATH, PORT_RANGE (19100-19999), METRICS_HOST/METRICS_PORT (127.0.0.1:9410),
RESYNC_SECONDS (5), RESTART_BACKOFF_SECONDS (1), RESTART_BACKOFF_MAX_SECONDS (30), PASS_ENV, LOG_LEVEL.
"""

from __future__ import annotations

import signal
import sys
import time

from prometheus_client import CollectorRegistry, disable_created_metrics

from workers.core.env import ConfigError, Settings, load_settings
from workers.core.health_http import HealthServer
from workers.core.jsonlog import setup_logging
from workers.pod_runner.config import RunnerConfig
from workers.pod_runner.kube import KubeAccess
from workers.pod_runner.metrics import RunnerMetrics
from workers.pod_runner.processes import PortPool, ProcessTable
from workers.pod_runner.runner import PodRunner

_STALL_S = 30.0


def main() -> int:
    try:
        config = RunnerConfig.from_settings(Settings(load_settings()))
    except ConfigError as exc:
        print(f"pod_runner: {exc}", file=sys.stderr)
        return 2
    setup_logging("pod-runner", config.log_level)
    disable_created_metrics()
    config.pod_log_dir.mkdir(parents=True, exist_ok=True)
    metrics = RunnerMetrics(CollectorRegistry(auto_describe=False))
    table = ProcessTable(config.workdir, config.pod_log_dir, PortPool(config.port_range),
                         config.backoff_s, config.backoff_max_s, metrics)
    runner = PodRunner(config, KubeAccess(config.kubeconfig), table)
    metrics.watch_table(table, lambda: set(runner.nodes))
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: runner.request_stop())
    # Bound before anything is stopped or started, so a taken port fails the start cleanly.
    server = HealthServer(config.metrics_host, config.metrics_port, metrics.registry,
                          alive=lambda: time.monotonic() - runner.last_tick < _STALL_S,
                          ready=lambda: runner.cache.synced)
    server.start()
    try:
        runner.clean_stale()
        return runner.run()
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
