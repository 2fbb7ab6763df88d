"""Completed-job rates for cost per job: the query against a real Prometheus scraping a real counter."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time

import pytest
from prometheus_client import CollectorRegistry, Counter, start_http_server

from workers.cost.jobs import (
    PrometheusJobRates,
    PrometheusQueryError,
    completed_jobs_query,
    media_rate_query,
    parse_vector,
)

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_parse_vector_reads_an_instant_vector_and_rejects_errors():
    ok = {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [
                {"metric": {"service": "stt"}, "value": [1700000000.0, "0.25"]},
                {"metric": {}, "value": [1700000000.0, "9"]},  # no service label: ignored
            ],
        },
    }
    assert parse_vector(ok) == {"stt": 0.25}
    assert parse_vector(ok, label=None) == {"": 9.0}  # an aggregate's one sample (sum(rate(...)))
    assert parse_vector({"status": "success", "data": {"resultType": "vector", "result": []}}, label=None) == {}
    with pytest.raises(PrometheusQueryError, match="bad_data: parse error"):
        parse_vector({"status": "error", "errorType": "bad_data", "error": "parse error"})


def test_query_text():
    assert (
        completed_jobs_query("1m")
        == 'sum by (service) (rate(model_worker_jobs_total{status="completed"}[1m]))'
    )
    assert media_rate_query("1m") == "sum(rate(dubbing_media_seconds_total[1m]))"


@pytest.mark.slow
@pytest.mark.skipif(
    not shutil.which("prometheus") and not shutil.os.path.exists(PROMETHEUS),
    reason="needs Debian's prometheus binary",
)
def test_completed_job_rate_from_a_real_prometheus(tmp_path):
    registry = CollectorRegistry()
    jobs = Counter("model_worker_jobs", "jobs finished", ["service", "status"], registry=registry)
    # The dubbing orchestrator's counter (workers/dubbing): 2.5 s of source media per dubbing job.
    media = Counter("dubbing_media_seconds", "media dubbed", registry=registry)
    worker, worker_thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    stop = threading.Event()

    def work():  # stt completes 20 jobs/s, tts only fails; 4 dubbing jobs/s of 2.5 s each: 10 media s/s
        n = 0
        while not stop.wait(0.05):
            n += 1
            jobs.labels(service="stt", status="completed").inc()
            jobs.labels(service="tts", status="failed").inc()
            if n % 5 == 0:
                media.inc(2.5)

    threading.Thread(target=work, daemon=True).start()
    port = free_port()
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: model-worker-stt\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{worker.server_port}']}}]\n"
    )
    prom = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # A short window, so that a few seconds of samples cover it and rate() need not extrapolate.
        source = PrometheusJobRates(f"http://127.0.0.1:{port}", "5s", timeout=2)
        deadline = time.monotonic() + 60
        rates: dict[str, float] = {}
        while time.monotonic() < deadline and rates.get("stt", 0.0) < 5:
            time.sleep(1)
            try:
                rates = source.fetch()
            except PrometheusQueryError:
                continue  # still starting
        assert 5 <= rates["stt"] < 30, rates  # ~20/s, less on a loaded machine
        assert rates.get("tts", 0.0) == 0.0  # failed jobs are not completed jobs
        assert 2.5 <= source.media_rate() < 15, source.media_rate()  # ~10/s, less on a loaded machine
        with pytest.raises(PrometheusQueryError, match="bad_data"):
            PrometheusJobRates(f"http://127.0.0.1:{port}", "5 minutes", timeout=2).fetch()
    finally:
        stop.set()
        prom.terminate()
        prom.wait(timeout=30)
        worker.shutdown()
        worker_thread.join(timeout=5)
