"""Access to the running local stack (brought up by `make run`/`make test` before pytest) for e2e tests."""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import wave
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config

from loadtests import inventory as inventory_facts

ROOT = Path(__file__).resolve().parents[2]
STATE = Path(os.environ.get("HARNESS_STATE_DIR", Path.home() / ".local/state/gpu-serving-harness/local"))
KUBECONFIG = STATE / "kubeconfig"
PORTS = yaml.safe_load((ROOT / "inventories/local/group_vars/all/ports.yml").read_text())
# The enabled services of the local inventory (the harness role's table unless the inventory sets its own).
SERVICES = {s["name"]: s for s in inventory_facts.services(ROOT / "inventories/local")}
NAMESPACE = "model-serving"
PROMETHEUS = f"http://127.0.0.1:{PORTS['prometheus_stack_prometheus_port']}"
ALERTMANAGER = f"http://127.0.0.1:{PORTS['prometheus_stack_alertmanager_port']}"
GATEWAY = f"http://127.0.0.1:{PORTS['model_services_gateway_port']}"
SUPERVISOR_CONF = STATE / "supervisor/supervisord.conf"


def require_stack() -> None:
    if not KUBECONFIG.exists():
        pytest.fail(f"{KUBECONFIG} is missing: bring the local target up first with `make run` "
                    "(or scripts/in-venv ansible-playbook -i inventories/local playbooks/site.yml)")


def kube() -> client.ApiClient:
    require_stack()
    return config.new_client_from_config(config_file=str(KUBECONFIG))


def http_json(url: str, data: bytes | None = None, headers: dict | None = None, timeout: float = 10) -> dict:
    """GET or POST JSON; a 429 (the gateway's per-key rate limit) is retried after its Retry-After."""
    for _ in range(60):
        req = urllib.request.Request(url, data=data, headers=headers or {})  # noqa: S310 (loopback URLs)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            if exc.code != 429:
                raise
            time.sleep(float(exc.headers.get("Retry-After", "1")))
    raise AssertionError(f"{url} kept answering 429 for 60 tries")


def prom_query(expr: str) -> list[dict]:
    body = http_json(f"{PROMETHEUS}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    return body["data"]["result"]


def prom_value(expr: str, default: float | None = None) -> float | None:
    result = prom_query(expr)
    return float(result[0]["value"][1]) if result else default


def api_key() -> str:
    return (STATE / "gateway/first-api-key").read_text().strip()


def speech_wav(text: str) -> bytes:
    """Speech synthesized by the project's Piper backend: the STT worker has real work to do on it."""
    from workers.tts.piper_backend import PiperBackend

    backend = PiperBackend(None, "cpu")
    backend.load()
    return backend.synthesize(text, "default").wav_bytes()


def tone_wav(seconds: float = 1.0, rate: int = 16000) -> bytes:
    """A short WAV: the STT worker transcribes it (to little or no text), which is all a queue test needs."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        frames = bytearray()
        for i in range(int(seconds * rate)):
            frames += int(8000 * math.sin(2 * math.pi * 220 * i / rate)).to_bytes(2, "little", signed=True)
        w.writeframes(bytes(frames))
    return buf.getvalue()


def submit_stt(audio: bytes, key: str) -> str:
    boundary = "harness-e2e-boundary"
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"tone.wav\"\r\n"
        f"Content-Type: audio/wav\r\n\r\n"
    ).encode() + audio + f"\r\n--{boundary}--\r\n".encode()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": f"multipart/form-data; boundary={boundary}"}
    return http_json(f"{GATEWAY}/v1/jobs/stt", data=body, headers=headers)["id"]


def job_status(job_id: str, key: str) -> dict:
    return http_json(f"{GATEWAY}/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {key}"})


def wait_for(what: str, check: Callable[[], object], timeout: float, interval: float = 1.0):
    """Poll until check() returns a truthy value; fail naming `what` and the last value seen."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}; last value: {last!r}")


def supervisorctl(*args: str) -> subprocess.CompletedProcess:
    venv_bin = Path(os.environ.get("VIRTUAL_ENV", "")) / "bin"
    ctl = venv_bin / "supervisorctl" if (venv_bin / "supervisorctl").exists() else "supervisorctl"
    return subprocess.run([str(ctl), "-c", str(SUPERVISOR_CONF), *args], capture_output=True, text=True,
                          check=False)


def run_playbook(playbook: str, *extra: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ansible-playbook", "-i", "inventories/local", f"playbooks/{playbook}", *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False,
    )
