"""python -m workers.dubbing: the dubbing orchestrator (workers/dubbing/orchestrator.py) on the dubbing queue.

Settings: QUEUES (the dubbing queue and the stage queues, as the gateway's), the queue policy (QUEUE_*),
DUBBING_CONCURRENCY (dubbing jobs stepped at once; a step only adds jobs or mixes audio), DUBBING_VOICE (the TTS
voice of the dubbed speech), DUBBING_SWEEP_INTERVAL_S (how often failed dubbing jobs' unprocessed stage jobs are
removed, default 2), METRICS_HOST/METRICS_PORT (9105: /healthz, /readyz, /metrics).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys

from bullmq import Worker
from prometheus_client import CollectorRegistry, Counter, disable_created_metrics
from redis.asyncio import Redis

from workers.core.common import Identity, MetricsEndpoint, QueuePolicy
from workers.core.env import ConfigError, Settings, load_settings
from workers.core.health_http import HealthServer
from workers.core.jsonlog import setup_logging
from workers.core.queues_setting import parse_queues
from workers.dubbing.orchestrator import Orchestrator
from workers.queueing.jobs import worker_options

log = logging.getLogger("workers.dubbing")


async def run(s: Settings) -> int:
    queues = {ref.service: ref.name for ref in parse_queues(s, default="dubbing,stt,mt,tts,lipsync")}
    missing = [q for q in ("dubbing", "stt", "mt", "tts") if q not in queues]
    if missing:
        raise ConfigError("QUEUES", s.text("QUEUES", ""), f"the dubbing queue and its stages; missing {missing}")
    policy = QueuePolicy.from_settings(s)
    endpoint = MetricsEndpoint.from_settings(s, 9105)
    concurrency = s.integer("DUBBING_CONCURRENCY", 8, 1, 1000)
    voice = s.text("DUBBING_VOICE", "default")
    sweep_every = s.number("DUBBING_SWEEP_INTERVAL_S", 2.0, 0.1, 3600.0)
    ident = Identity.from_settings(s)
    setup_logging("dubbing", ident.log_level, ident.pod_name, ident.node_name)
    registry = CollectorRegistry()
    jobs = Counter("dubbing_jobs", "Dubbing jobs finished, by outcome", ["status"], registry=registry)
    for status in ("completed", "failed"):
        jobs.labels(status)
    # Source media dubbed: the cost exporter divides each stage service's cost by its rate
    # (dubbing_cost_per_media_minute).
    media = Counter("dubbing_media_seconds", "Seconds of source media of the dubbing jobs completed",
                    registry=registry)
    cancelled = Counter("dubbing_stage_jobs_cancelled", "Stage jobs of failed dubbing jobs removed before any worker "
                        "took them", registry=registry)
    redis = Redis.from_url(policy.redis_url)
    orchestrator = Orchestrator(policy, queues, redis, voice)
    state = {"ready": False}
    health = HealthServer(endpoint.host, endpoint.port, registry, alive=lambda: True, ready=lambda: state["ready"])
    health.start()
    name = f"dubbing@{ident.pod_name or socket.gethostname()}"
    worker = Worker(queues["dubbing"], orchestrator.process, worker_options(policy, concurrency, name))
    def completed(job, result) -> None:
        jobs.labels("completed").inc()
        seconds = result.get("source_seconds") if isinstance(result, dict) else None
        if isinstance(seconds, int | float) and seconds > 0:
            media.inc(seconds)

    worker.on("completed", completed)
    # A failed stage job moves its dubbing job back to wait with a deferred failure, and this worker fails it.
    worker.on("failed", lambda job, err: jobs.labels("failed").inc())

    async def sweep() -> None:
        # From the failed set rather than the failed event: a dubbing job failed by the stalled-job check, or
        # while this process was stopping, is swept all the same.
        while True:
            try:
                swept = await orchestrator.sweep_failed()
                cancelled.inc(sum(len(v) for v in swept.values()))
            except Exception:  # Redis away for a moment: the next round catches up (the sweep keeps its place)
                log.exception("sweeping failed dubbing jobs")
            await asyncio.sleep(sweep_every)

    sweeper = asyncio.ensure_future(sweep())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(worker.close()))
    state["ready"] = True
    log.info("ready: consuming", extra={"queue": queues["dubbing"], "concurrency": concurrency})
    try:
        await worker.run()
    finally:
        state["ready"] = False
        sweeper.cancel()
        await orchestrator.close()
        await redis.aclose()
        health.stop()
    return 0


def main() -> int:
    disable_created_metrics()
    try:
        return asyncio.run(run(Settings(load_settings())))
    except ConfigError as exc:
        print(f"dubbing: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
