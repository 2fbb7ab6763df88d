"""The model worker's Prometheus metrics. Names and labels are a contract (shared/DESIGN.md)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from workers.worker.busy import BusyTracker

# Jobs run from tens of milliseconds (a short TTS sentence on a GPU) to about a minute (long audio on CPU).
JOB_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 45.0, 60.0)
# Queue wait spans an idle queue (milliseconds) to a backlog under load (minutes).
QUEUE_WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
JOB_STATUSES = ("completed", "failed", "retried")


class WorkerMetrics:
    def __init__(
        self,
        service: str,
        queue_name: str,
        registry: CollectorRegistry,
        busy: BusyTracker,
        info: dict[str, str],
    ) -> None:
        self.service = service
        self.queue_name = queue_name
        self.jobs = Counter(
            "model_worker_jobs", "Jobs finished by this worker, by outcome "
            "(retried: the attempt failed and BullMQ will try again)",
            ["service", "queue_name", "status"], registry=registry,
        )
        for status in JOB_STATUSES:
            self.jobs.labels(service, queue_name, status)
        self.job_duration = Histogram(
            "model_worker_job_duration_seconds", "Processing time of one job, input fetch to result",
            ["service"], buckets=JOB_DURATION_BUCKETS, registry=registry,
        )
        self.job_duration.labels(service)
        self.queue_wait = Histogram(
            "model_worker_queue_wait_seconds", "Time from job creation to the start of its processing",
            ["service"], buckets=QUEUE_WAIT_BUCKETS, registry=registry,
        )
        self.queue_wait.labels(service)
        self.busy_ratio = Gauge(
            "model_worker_busy_ratio", "Fraction of the last 30 s this worker spent running the model",
            ["service"], registry=registry,
        )
        self.busy_ratio.labels(service).set_function(busy.ratio)
        self.audio_seconds = Counter(
            "model_worker_audio_seconds",
            "Audio seconds handled: input audio for stt, generated audio for tts",
            ["service"], registry=registry,
        )
        self.audio_seconds.labels(service)
        self.ready = Gauge("model_worker_ready", "1 once the model is loaded and jobs are taken",
                           ["service"], registry=registry)
        self.ready.labels(service).set(0)
        self.batch_size = Histogram(
            "model_worker_batch_size", "Jobs per model call", ["service"],
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32), registry=registry,
        )
        self.batch_size.labels(service)
        self.stalled = Counter(
            "model_worker_stalled_jobs", "Jobs this worker's stalled check moved back to wait (lost locks)",
            ["service", "queue_name"], registry=registry,
        )
        self.stalled.labels(service, queue_name)
        labels = sorted(info)
        self.info = Gauge("model_worker_info", "Constant 1; labels describe this worker",
                          labels, registry=registry)
        self.info.labels(**info).set(1)

    def job_finished(self, status: str) -> None:
        self.jobs.labels(self.service, self.queue_name, status).inc()
