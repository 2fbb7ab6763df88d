"""Run one model worker: load the model, consume its BullMQ queue, shut down without losing work.

Shutdown: the first SIGTERM (or SIGINT) pauses the BullMQ worker, which stops taking jobs and waits for
the jobs in hand while their locks are still renewed, then closes it; the process exits 0. A second
signal exits at once (status 143); the jobs it held are recovered by another worker's stalled-job check
once their locks expire.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from typing import Any

from bullmq import Job, UnrecoverableError, Worker
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from workers.core.health_http import HealthServer
from workers.queueing.jobs import worker_options
from workers.worker.batcher import Batcher
from workers.worker.busy import BusyTracker
from workers.worker.config import WorkerConfig
from workers.worker.engine import Engine
from workers.worker.metrics import WorkerMetrics

log = logging.getLogger(__name__)
EXIT_FORCED = 143


class WorkerProcess:
    def __init__(self, config: WorkerConfig, engine: Engine, redis: Redis,
                 registry: CollectorRegistry | None = None) -> None:
        self.config = config
        self.engine = engine
        self.redis = redis
        self.registry = registry or CollectorRegistry()
        self.busy = BusyTracker(config.busy_window_s)
        ident = config.identity
        info = {"service": config.service, "queue_name": config.queue_name, "pod": ident.pod_name or "",
                "node": ident.node_name or "", "host": socket.gethostname(), **engine.describe()}
        self.metrics = WorkerMetrics(config.service, config.queue_name, self.registry, self.busy, info)
        self.ready = False
        self.stopping = False
        self.worker: Worker | None = None
        self.batcher: Batcher | None = None
        self._signals = 0
        self._cleanups: set[asyncio.Future[None]] = set()
        self._heartbeat = time.monotonic()
        self._shutdown_task: asyncio.Task[None] | None = None

    # --- job processing -------------------------------------------------------------------------
    async def process(self, job: Job, token: str) -> dict[str, Any]:
        assert self.batcher is not None
        started = time.time()
        self.metrics.queue_wait.labels(self.config.service).observe(max(0.0, started - job.timestamp / 1000))
        try:
            item = await self.engine.prepare(job)
            output = await self.batcher.submit(item)
            result = await self.engine.finish(job, output)
        finally:
            self.metrics.job_duration.labels(self.config.service).observe(time.time() - started)
        audio = self.engine.audio_seconds(item, output)
        self.metrics.audio_seconds.labels(self.config.service).inc(audio)
        result["timings"] = {"queue_wait_s": round(max(0.0, started - job.timestamp / 1000), 3),
                             "processing_s": round(time.time() - started, 3), "worker": self.worker_name}
        return result

    @property
    def worker_name(self) -> str:
        return self.config.identity.pod_name or f"{socket.gethostname()}:{os.getpid()}"

    def _on_completed(self, job: Job, result: Any) -> None:
        if self.worker is not None and self.worker.forceClosing:
            return
        self.metrics.job_finished("completed")
        # Logged here, after BullMQ recorded the completion under this worker's lock, not when the model
        # finished: a worker that lost its lock finishes the model call but does not complete the job.
        timings = result.get("timings", {}) if isinstance(result, dict) else {}
        log.info("job completed", extra={"job_id": job.id, **timings})
        task = asyncio.ensure_future(self._cleanup(job))
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    async def _cleanup(self, job: Job) -> None:
        try:
            await self.engine.completed(job)
        except Exception:
            log.exception("cleanup after job failed", extra={"job_id": job.id})

    def _on_failed(self, job: Job, err: Exception) -> None:
        if self.worker is not None and self.worker.forceClosing:
            return
        attempts = int(job.opts.get("attempts") or 1)
        final = isinstance(err, UnrecoverableError) or job.attemptsMade >= attempts
        self.metrics.job_finished("failed" if final else "retried")
        log.warning("job failed", extra={"job_id": job.id, "error": str(err)[:500], "final": final,
                                         "attempts_made": job.attemptsMade, "attempts": attempts})

    def _on_error(self, err: Exception, *_: Any) -> None:
        log.error("bullmq error", extra={"error": str(err)[:500]})

    def _on_stalled(self, job_id: str, *_: Any) -> None:
        self.metrics.stalled.labels(self.config.service, self.config.queue_name).inc()
        log.warning("stalled job moved back to wait", extra={"job_id": job_id})

    # --- lifecycle --------------------------------------------------------------------------------
    def alive(self) -> bool:
        """Live while the event loop runs: it renews job locks, so a stuck loop means lost jobs."""
        return time.monotonic() - self._heartbeat < 10.0

    async def _beat(self) -> None:
        while True:
            self._heartbeat = time.monotonic()
            await asyncio.sleep(1.0)

    def _on_signal(self, signum: int) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info("shutdown requested: finishing jobs in hand, taking no new ones",
                     extra={"signal": signal.Signals(signum).name})
            self._shutdown_task = asyncio.ensure_future(self.shutdown())
        else:
            log.warning("second signal: exiting now", extra={"signal": signal.Signals(signum).name})
            logging.shutdown()
            os._exit(EXIT_FORCED)

    async def shutdown(self) -> None:
        self.stopping = True
        self.ready = False
        self.metrics.ready.labels(self.config.service).set(0)
        if self.worker is not None:
            await self.worker.pause()  # waits for the jobs in hand; locks keep being renewed meanwhile
            await self.worker.close()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        health = HealthServer(self.config.metrics.host, self.config.metrics.port, self.registry,
                              alive=self.alive, ready=lambda: self.ready)
        health.start()
        beat = asyncio.ensure_future(self._beat())
        log.info("worker starting", extra={"service": self.config.service, "queue": self.config.queue_name,
                                           "metrics_port": health.port})
        try:
            t0 = time.time()
            await asyncio.to_thread(self.engine.load)
            log.info("model loaded", extra={"seconds": round(time.time() - t0, 2), **self.engine.describe()})
            if self.stopping:
                return 0
            self.batcher = Batcher(self.engine.run_batch, self.engine.max_batch, self.engine.batch_wait_s, self.busy,
                                   on_batch=self.metrics.batch_size.labels(self.config.service).observe)
            self.batcher.start()
            opts = worker_options(self.config.policy, self.engine.max_batch, self.worker_name)
            self.worker = Worker(self.config.queue_name, self.process, opts)
            self.worker.on("completed", self._on_completed)
            self.worker.on("failed", self._on_failed)
            self.worker.on("stalled", self._on_stalled)
            self.worker.on("error", self._on_error)
            self.ready = True
            self.metrics.ready.labels(self.config.service).set(1)
            log.info("ready: consuming", extra={"queue": self.config.queue_name, "worker_id": self.worker.id,
                                                "concurrency": self.engine.max_batch})
            await self.worker.run()
            if self._shutdown_task is not None:
                await self._shutdown_task
            return 0
        finally:
            self.ready = False
            beat.cancel()
            if self.batcher is not None:
                await self.batcher.stop()
            await self.redis.aclose()
            health.stop()
            log.info("worker stopped")
