"""Send every bad request of tests/workers/gateway_cases.py to a real gateway and print what it answers.

    python bench/error_table.py > /tmp/errors.md

The table in workers/README.md ("Bad inputs") is this script's output. It starts a private redis-server
and `python -m workers.gateway` (with the limits the cases assume) on free 127.0.0.1 ports.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
from benchlib import REPO
from gateway_load import free_port, wait_http

sys.path.insert(0, str(REPO / "tests" / "workers"))


def main() -> None:
    from gateway_cases import CASES, LIMITS, Audio

    from workers.tts.piper_backend import PiperBackend

    voice = PiperBackend(None, "cpu")
    voice.load()
    speech = voice.synthesize("The quick brown fox jumps over the lazy dog.", "default")
    audio = Audio(speech.samples, speech.sample_rate)

    tmp = Path(tempfile.mkdtemp(prefix="errtable-"))
    redis_port, gw_port = free_port(), free_port()
    redis = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(redis_port),
                              "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp)],
                             stdout=subprocess.DEVNULL)
    # The cases fit in the burst; the rate-limit row then drains the bucket on purpose.
    limits = {**LIMITS, "GATEWAY_RATE_LIMIT_PER_S": "1", "GATEWAY_RATE_LIMIT_BURST": str(len(CASES) + 5)}
    env = {**os.environ, **limits, "PYTHONPATH": str(REPO), "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
           "GATEWAY_PORT": str(gw_port), "GATEWAY_STATE_DIR": str(tmp / "state"), "LOG_LEVEL": "WARNING"}
    gateway = subprocess.Popen([sys.executable, "-m", "workers.gateway"], env=env, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{gw_port}/readyz", 60)
        key = (tmp / "state" / "first-api-key").read_text().strip()
        auth = {"good": {"X-API-Key": key}, "none": {}, "bad": {"X-API-Key": "mgw_wrongkey"},
                "basic": {"Authorization": "Basic dXNlcjpwYXNz"}}
        print("| bad input | request | status | error code | message |")
        print("|---|---|---|---|---|")
        with httpx.Client(base_url=f"http://127.0.0.1:{gw_port}") as client:
            for case in CASES:
                kwargs = case.request(audio)
                headers = {**auth[case.auth], **kwargs.pop("headers", {})}
                response = client.request(case.method, case.path, headers=headers, **kwargs)
                error = response.json()["error"]
                retry = response.headers.get("retry-after")
                extra = f" (Retry-After: {retry})" if retry else ""
                message = error["message"].replace("|", "\\|")
                print(f"| {case.name} | `{case.method} {case.path}` | {response.status_code}{extra} | "
                      f"`{error['code']}` | {message} |")
            for _ in range(len(CASES) + 10):
                response = client.post("/v1/jobs/tts", json={"text": "hi"}, headers=auth["good"])
                if response.status_code == 429:
                    error = response.json()["error"]
                    print(f"| over the per-key rate limit | `POST /v1/jobs/tts` | 429 (Retry-After: "
                          f"{response.headers['retry-after']}) | `{error['code']}` | {error['message']} |")
                    break
    finally:
        gateway.terminate()
        redis.terminate()
        gateway.wait(timeout=20)
        redis.wait(timeout=20)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
