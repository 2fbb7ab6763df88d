"""python -m workers.queue_exporter: serve BullMQ queue counts on /metrics."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from prometheus_client import CollectorRegistry

from workers.core.env import ConfigError, Settings, load_settings
from workers.core.health_http import HealthServer
from workers.core.jsonlog import setup_logging
from workers.queue_exporter.collector import QueueCollector, QueueReader
from workers.queue_exporter.config import ExporterConfig

log = logging.getLogger("workers.queue_exporter")


async def serve(config: ExporterConfig) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reader = QueueReader(config)
    registry = CollectorRegistry(auto_describe=False)
    collector = QueueCollector(config, reader, loop)
    registry.register(collector)
    server = HealthServer(config.metrics.host, config.metrics.port, registry,
                          alive=lambda: True, ready=lambda: collector.last_ok)
    server.start()
    # Ready means "the last scrape reached Redis"; take one reading now so readiness is known at start.
    await asyncio.to_thread(lambda: list(collector.collect()))
    log.info("queue exporter serving", extra={"port": server.port,
                                              "queues": {r.name: r.service for r in config.queues}})
    await stop.wait()
    server.stop()
    await reader.close()
    log.info("queue exporter stopped")
    return 0


def main() -> int:
    try:
        config = ExporterConfig.from_settings(Settings(load_settings()))
    except ConfigError as exc:
        print(f"queue_exporter: {exc}", file=sys.stderr)
        return 2
    setup_logging("queue-exporter", config.identity.log_level, config.identity.pod_name,
                  config.identity.node_name)
    return asyncio.run(serve(config))


if __name__ == "__main__":
    sys.exit(main())
