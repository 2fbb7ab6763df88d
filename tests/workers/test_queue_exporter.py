"""The queue exporter as a process: zeros for empty queues, real BullMQ counts after jobs are pushed."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bullmq import Queue
from prometheus_client.parser import text_string_to_metric_families
from workers_testlib import Proc, base_env, free_port, http_get, wait_for


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, text = http_get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def start_exporter(tmp_path: Path, redis_url: str, prefix: str, queues: str) -> tuple[Proc, int]:
    port = free_port()
    proc = Proc(["-m", "workers.queue_exporter"],
                base_env(REDIS_URL=redis_url, QUEUE_PREFIX=prefix, QUEUES=queues, METRICS_PORT=str(port),
                         EXPORTER_TIMEOUT_S="1"),
                tmp_path / f"exporter-{port}.log")
    wait_for(lambda: http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200, 30, "exporter up")
    return proc, port


def test_empty_queues_are_exported_as_zeros_then_counts_follow_jobs(redis_url: str, prefix: str,
                                                                    tmp_path: Path) -> None:
    proc, port = start_exporter(tmp_path, redis_url, prefix, "stt,tts,stt-gpu:stt")
    try:
        samples = scrape(port)
        assert value(samples, "redis_queue_exporter_up") == 1
        for name, service in (("stt", "stt"), ("tts", "tts"), ("stt-gpu", "stt")):
            assert value(samples, "redis_queue_depth", queue_name=name, queue_type=service) == 0
            for kind in ("waiting", "active", "delayed", "failed", "completed"):
                assert value(samples, f"redis_queue_{kind}", queue_name=name) == 0

        async def push() -> None:
            opts = {"connection": redis_url, "prefix": prefix}
            stt, tts = Queue("stt", opts), Queue("tts", opts)
            for i in range(3):
                await stt.add("stt", {"i": i})
            await stt.add("stt", {"i": 3}, {"delay": 60_000})
            await stt.add("stt", {"i": 4}, {"priority": 5})
            await tts.add("tts", {"text": "hi"})
            await stt.close()
            await tts.close()

        asyncio.run(push())
        samples = scrape(port)
        assert value(samples, "redis_queue_waiting", queue_name="stt") == 4  # 3 + 1 prioritized
        assert value(samples, "redis_queue_delayed", queue_name="stt") == 1
        assert value(samples, "redis_queue_depth", queue_name="stt", queue_type="stt") == 5
        assert value(samples, "redis_queue_depth", queue_name="tts", queue_type="tts") == 1
        assert value(samples, "redis_queue_depth", queue_name="stt-gpu", queue_type="stt") == 0
        assert http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200
    finally:
        proc.stop()


def test_unreachable_redis_reports_down_and_not_ready(prefix: str, tmp_path: Path) -> None:
    proc, port = start_exporter(tmp_path, f"redis://127.0.0.1:{free_port()}/0", prefix, "stt")
    try:
        samples = scrape(port)
        assert value(samples, "redis_queue_exporter_up") == 0
        assert not any(name == "redis_queue_depth" for name, _ in samples)  # no made-up zeros
        assert http_get(f"http://127.0.0.1:{port}/readyz", timeout=10)[0] == 503
    finally:
        proc.stop()


def test_extra_queues_are_exported_with_their_own_queue_type(redis_url: str, prefix: str, tmp_path: Path) -> None:
    port = free_port()
    proc = Proc(["-m", "workers.queue_exporter"],
                base_env(REDIS_URL=redis_url, QUEUE_PREFIX=prefix, QUEUES="stt",
                         EXTRA_QUEUES="policy-selftest-a:policy-selftest,plain", METRICS_PORT=str(port),
                         EXPORTER_TIMEOUT_S="1"),
                tmp_path / f"exporter-{port}.log")
    try:
        wait_for(lambda: http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200, 30, "exporter up")
        samples = scrape(port)
        assert value(samples, "redis_queue_depth", queue_name="policy-selftest-a", queue_type="policy-selftest") == 0
        assert value(samples, "redis_queue_depth", queue_name="plain", queue_type="extra") == 0

        async def push() -> None:
            queue = Queue("policy-selftest-a", {"connection": redis_url, "prefix": prefix})
            for i in range(7):
                await queue.add("job", {"i": i})
            await queue.close()

        asyncio.run(push())
        samples = scrape(port)
        assert value(samples, "redis_queue_depth", queue_name="policy-selftest-a", queue_type="policy-selftest") == 7
        assert value(samples, "redis_queue_depth", queue_name="stt", queue_type="stt") == 0
    finally:
        proc.stop()


def test_an_extra_queue_that_repeats_a_service_queue_is_refused(redis_url: str, prefix: str, tmp_path: Path) -> None:
    import subprocess
    import sys

    env = base_env(REDIS_URL=redis_url, QUEUE_PREFIX=prefix, QUEUES="stt", EXTRA_QUEUES="stt",
                   METRICS_PORT=str(free_port()))
    done = subprocess.run([sys.executable, "-m", "workers.queue_exporter"], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "EXTRA_QUEUES" in done.stderr and "'stt' repeats" in done.stderr
