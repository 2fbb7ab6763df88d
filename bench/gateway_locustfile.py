"""Locust users for bench/gateway_load.py: submit jobs to the gateway as fast as it answers."""

from __future__ import annotations

import os
from pathlib import Path

from locust import constant, task
from locust.contrib.fasthttp import FastHttpUser

KEY = Path(os.environ["BENCH_API_KEY_FILE"]).read_text().strip()
SERVICE = os.environ.get("BENCH_SERVICE", "tts")
AUDIO = Path(os.environ["BENCH_AUDIO"]).read_bytes() if SERVICE == "stt" else b""


class Submitter(FastHttpUser):
    wait_time = constant(0)

    @task
    def submit(self) -> None:
        headers = {"X-API-Key": KEY}
        if SERVICE == "tts":
            response = self.client.post("/v1/jobs/tts", json={"text": "Benchmark sentence."}, headers=headers,
                                        catch_response=True)
        else:
            boundary = "benchboundary"
            body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
                    "Content-Type: audio/wav\r\n\r\n").encode() + AUDIO + f"\r\n--{boundary}--\r\n".encode()
            headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
            response = self.client.post("/v1/jobs/stt", data=body, headers=headers, catch_response=True)
        with response:
            if response.status_code != 202:
                response.failure(f"status {response.status_code}: {response.text[:200]}")
