"""Two gateway processes on one Redis, as two replicas behind a Service: a key works on both, the rate limit is one
limit for the key (not one per replica), and a restart with an empty state directory (a new emptyDir) keeps the key.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from workers_testlib import Proc, base_env, free_port, http_get, wait_for

# An id no job has: 404 after authentication and the rate limit, 401/429 before; nothing is queued.
PROBE = "/v1/jobs/tts-0123456789abcdef0123456789abcdef"


class Replica:
    def __init__(self, redis_url: str, prefix: str, root: Path, name: str, **extra: str) -> None:
        self.port = free_port()
        self.key_file = root / name / "state" / "first-api-key"
        self.env = base_env(REDIS_URL=redis_url, QUEUE_PREFIX=prefix, GATEWAY_PORT=str(self.port),
                            GATEWAY_STATE_DIR=str(root / name / "state"), **extra)
        self.log = root / f"{name}.log"
        self.proc: Proc | None = None

    def start(self) -> Replica:
        self.proc = Proc(["-m", "workers.gateway"], self.env, self.log)
        wait_for(lambda: http_get(f"http://127.0.0.1:{self.port}/readyz")[0] == 200, 30, "gateway ready")
        return self

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()
            self.proc = None

    def get(self, key: str) -> int:
        return httpx.get(f"http://127.0.0.1:{self.port}{PROBE}", headers={"X-API-Key": key}, timeout=10).status_code


@pytest.fixture
def replicas(redis_url: str, prefix: str, tmp_path: Path):
    started: list[Replica] = []

    def start(name: str, **extra: str) -> Replica:
        r = Replica(redis_url, prefix, tmp_path, name, **extra).start()
        started.append(r)
        return r

    yield start
    for r in started:
        r.stop()


def _first_key(*replicas: Replica) -> str:
    keys = {r.key_file.read_text().strip() for r in replicas if r.key_file.exists()}
    assert len(keys) == 1, f"the replicas generated {len(keys)} first keys; one store must have one"
    return keys.pop()


def test_a_key_works_on_every_replica(replicas) -> None:
    a, b = replicas("a"), replicas("b")
    key = _first_key(a, b)
    codes = [r.get(key) for r in (a, b, a, b, a, b)]
    assert codes == [404] * 6, codes  # 404: authenticated, no such job
    assert {a.get("mgw_wrong"), b.get("mgw_wrong")} == {401}


def test_the_rate_limit_is_shared_by_the_replicas(replicas) -> None:
    limits = {"GATEWAY_RATE_LIMIT_PER_S": "0.01", "GATEWAY_RATE_LIMIT_BURST": "3"}
    a, b = replicas("a", **limits), replicas("b", **limits)
    key = _first_key(a, b)
    codes = [r.get(key) for r in (a, b, a, b)]
    assert codes == [404, 404, 404, 429], codes  # a burst of 3 for the key, whichever replica answers


def test_a_restarted_replica_with_an_empty_state_dir_keeps_the_key(replicas, tmp_path: Path) -> None:
    a = replicas("a")
    key = _first_key(a)
    a.stop()
    b = replicas("b")  # a fresh state directory: what a rescheduled pod with an emptyDir gets
    assert not b.key_file.exists(), "a second first key was generated although the store has one"
    assert b.get(key) == 404


def test_a_key_from_a_mounted_secret_file_is_accepted(replicas, tmp_path: Path) -> None:
    secret = tmp_path / "secret" / "api-key"
    secret.parent.mkdir()
    secret.write_text("mgw_" + "s" * 43 + "\n")
    a = replicas("a", GATEWAY_API_KEY_FILE=str(secret))
    b = replicas("b", GATEWAY_API_KEY_FILE=str(secret))
    assert a.get(secret.read_text().strip()) == 404 and b.get(secret.read_text().strip()) == 404
    assert secret.read_text() == "mgw_" + "s" * 43 + "\n"  # read, never rewritten


def test_a_gateway_whose_key_store_does_not_answer_says_so(prefix: str, tmp_path: Path) -> None:
    dead = Replica(f"redis://127.0.0.1:{free_port()}/0", prefix, tmp_path, "dead")
    proc = Proc(["-m", "workers.gateway"], dead.env, dead.log)
    try:
        wait_for(lambda: http_get(f"http://127.0.0.1:{dead.port}/readyz")[0] == 503, 30, "gateway answering 503")
        response = httpx.get(f"http://127.0.0.1:{dead.port}{PROBE}", headers={"X-API-Key": "mgw_any"}, timeout=30)
    finally:
        proc.stop()
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "key_store_unavailable" and "gateway:api_keys" in error["message"], error
    assert "Traceback" not in proc.log()
