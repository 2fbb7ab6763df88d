"""Read BullMQ job counts at scrape time and expose them as redis_queue_* gauges.

Meaning (also in workers/README.md):
- redis_queue_waiting{queue_name}: jobs ready to run: BullMQ's wait list + prioritized + paused.
- redis_queue_active / _delayed / _failed / _completed{queue_name}: BullMQ's own sets. Delayed includes
  jobs waiting out a retry backoff; failed and completed hold finished jobs until their retention age.
- redis_queue_depth{queue_name,queue_type}: work not yet finished = waiting + active + delayed.
  queue_type is the service the queue feeds (stt, tts). This is the HPA's external metric.
Every configured queue is exported, with zeros when it is empty or does not exist yet.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass

from bullmq import Queue
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from workers.queue_exporter.config import ExporterConfig

log = logging.getLogger(__name__)
BULLMQ_TYPES = ("waiting", "prioritized", "paused", "active", "delayed", "failed", "completed")


@dataclass(frozen=True)
class QueueCounts:
    waiting: int
    active: int
    delayed: int
    failed: int
    completed: int

    @property
    def depth(self) -> int:
        return self.waiting + self.active + self.delayed

    @classmethod
    def from_bullmq(cls, counts: dict[str, int]) -> QueueCounts:
        return cls(
            waiting=counts["waiting"] + counts["prioritized"] + counts["paused"],
            active=counts["active"],
            delayed=counts["delayed"],
            failed=counts["failed"],
            completed=counts["completed"],
        )


class QueueReader:
    """Owns the BullMQ Queue handles; used from the event loop that created them."""

    def __init__(self, config: ExporterConfig) -> None:
        opts = {"connection": config.redis_url, "prefix": config.prefix}
        self.queues = {ref.name: Queue(ref.name, opts) for ref in config.queues}

    async def read(self) -> dict[str, QueueCounts]:
        counts = await asyncio.gather(*(q.getJobCounts(*BULLMQ_TYPES) for q in self.queues.values()))
        return {name: QueueCounts.from_bullmq(c) for name, c in zip(self.queues, counts, strict=True)}

    async def close(self) -> None:
        for queue in self.queues.values():
            await queue.close()


class QueueCollector(Collector):
    def __init__(self, config: ExporterConfig, reader: QueueReader, loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        self.reader = reader
        self.loop = loop
        self.last_ok = False

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("redis_queue_exporter_up", "1 if the last scrape read every queue from Redis")
        future = asyncio.run_coroutine_threadsafe(self.reader.read(), self.loop)
        try:
            counts = future.result(timeout=self.config.timeout_s)
        except Exception as exc:  # any Redis failure or timeout: report down, export no stale counts
            future.cancel()
            log.warning("reading queue counts failed", extra={"error": str(exc)[:300]})
            self.last_ok = False
            up.add_metric([], 0)
            yield up
            return
        self.last_ok = True
        up.add_metric([], 1)
        yield up
        depth = GaugeMetricFamily("redis_queue_depth", "Jobs not finished: waiting + active + delayed",
                                  labels=["queue_name", "queue_type"])
        families = {
            field: GaugeMetricFamily(f"redis_queue_{field}", help_text, labels=["queue_name"])
            for field, help_text in (
                ("waiting", "Jobs ready to run (wait + prioritized + paused)"),
                ("active", "Jobs being processed"),
                ("delayed", "Jobs delayed, including retries waiting out their backoff"),
                ("failed", "Failed jobs still retained"),
                ("completed", "Completed jobs still retained"),
            )
        }
        for ref in self.config.queues:
            c = counts[ref.name]
            depth.add_metric([ref.name, ref.service], c.depth)
            for field, family in families.items():
                family.add_metric([ref.name], getattr(c, field))
        yield depth
        yield from families.values()
