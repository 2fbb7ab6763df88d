"""Locust users for the gateway: STT uploads cached speech clips, TTS posts a text mix; the shape follows the
scenario's stages.

Headless, the checker starts it (``python -m loadtests.run``) with ``--host`` the loopback relay it opens to the
gateway's Service through the API server (loadtests/apiproxy.py). Interactively, reach the gateway yourself, for
example with a port-forward of your choosing (``<port>``: any free local port; kubectl binds loopback):

    kubectl -n model-serving port-forward svc/gateway <port>:http &           # the gateway, on any target
    kubectl -n model-serving get secret gateway-api-key -o jsonpath='{.data.key}' | base64 -d > /tmp/key
    LOADTEST_API_KEY_FILE=/tmp/key scripts/in-venv locust -f loadtests/locustfile.py --host http://127.0.0.1:<port>
    LOADTEST_SCENARIO=soak ... (the same, another shape)

The web UI listens on loopback (Locust's own default is every interface).

Environment:
- ``LOADTEST_API_KEY_FILE``: gateway API key file (required).
- ``LOADTEST_SCENARIO``: scenario name or path (default ``surge``).
- ``LOADTEST_LEDGER``: where each submitted job id is recorded (default: a new file under the state dir).
- ``LOADTEST_AUDIO_DIR``: clip cache (default ``$HARNESS_CACHE/loadtests/audio``).
- ``LOADTEST_HOST``: gateway URL when ``--host`` is not given; there is no default gateway (Locust refuses to start
  without one): ``python -m loadtests.run`` finds it from the inventory and relays it for Locust.
"""

from __future__ import annotations

import itertools
import os
import random
import re
import sys
import time
import uuid
from pathlib import Path
from typing import ClassVar

# Locust puts this file's folder on sys.path, not the repository root that holds the package.
_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from locust import LoadTestShape, between, events, task  # noqa: E402
from locust.contrib.fasthttp import FastHttpUser  # noqa: E402

from loadtests.audio import ensure_clips  # noqa: E402
from loadtests.ledger import LedgerWriter  # noqa: E402
from loadtests.scenario import DEFAULT_SCENARIO, load_scenario  # noqa: E402

STATE_DIR = Path(os.environ.get("HARNESS_STATE_DIR") or Path.home() / ".local/state/gpu-serving-harness/local")
# The services it may load: as loadtests.run resolved them from the inventory, else the local inventory's.
_SERVICES = [s for s in os.environ.get("LOADTEST_SERVICES", "").split(",") if s] or None
SCENARIO = load_scenario(os.environ.get("LOADTEST_SCENARIO", DEFAULT_SCENARIO), _SERVICES)
API_KEY_FILE = os.environ.get("LOADTEST_API_KEY_FILE", "")
LEDGER_PATH = Path(
    os.environ.get("LOADTEST_LEDGER")
    or STATE_DIR / "loadtests" / f"interactive-{time.strftime('%Y%m%dT%H%M%S')}" / "jobs.jsonl"
)
JOB_ID = re.compile(r"^(stt|tts|mt|dubbing)-[0-9a-f]{32}$")
# The mt users' target language: one the inventory's mt service translates to (its MT_TARGET_LANGUAGES).
MT_TARGET = os.environ.get("LOADTEST_MT_TARGET_LANGUAGE", "de")

_ledger: LedgerWriter | None = None
_api_key: str | None = None


def ledger() -> LedgerWriter:
    global _ledger
    if _ledger is None:
        _ledger = LedgerWriter(LEDGER_PATH)
    return _ledger


def api_key() -> str:
    global _api_key
    if _api_key is None:
        if not API_KEY_FILE:
            raise SystemExit("loadtests: LOADTEST_API_KEY_FILE is not set: write the gateway's key to a file (on a "
                             "cluster: the Secret gateway-api-key, key `key`) and name it there")
        try:
            _api_key = Path(API_KEY_FILE).read_text().strip()
        except OSError as exc:
            raise SystemExit(
                f"loadtests: cannot read the gateway API key from {API_KEY_FILE}: {exc}; set LOADTEST_API_KEY_FILE"
            ) from None
    return _api_key


@events.init_command_line_parser.add_listener
def _local_web_ui(parser) -> None:
    # Everything here binds 127.0.0.1; Locust's own default is every interface.
    parser.set_defaults(web_host="127.0.0.1")


@events.test_start.add_listener
def _on_test_start(environment, **_kwargs) -> None:
    ledger().write("load_start", scenario=SCENARIO.name)


@events.test_stop.add_listener
def _on_test_stop(environment, **_kwargs) -> None:
    if _ledger is not None:  # Locust also fires this when the web UI quits without a test having run
        _ledger.write("load_stop", scenario=SCENARIO.name)


class GatewayUser(FastHttpUser):
    abstract = True
    host = os.environ.get("LOADTEST_HOST") or None
    wait_time = between(*SCENARIO.load.wait_s)
    service = ""

    def send(self) -> str:
        """Note the request before it goes out: one cut off by the end of the load is still counted."""
        request_id = uuid.uuid4().hex
        ledger().write("send", service=self.service, request_id=request_id)
        return request_id

    def record(self, response, started: float, request_id: str) -> None:
        """Validate a submission answer; mark it failed in Locust's stats if wrong; record it."""
        latency_ms = round((time.perf_counter() - started) * 1000, 2)
        error = None
        job_id = None
        if response.status_code != 202:
            error = f"HTTP {response.status_code}: {(response.text or '')[:200]}"
        else:
            try:
                body = response.json()
            except ValueError:
                body = None
            if not isinstance(body, dict):
                error = f"202 with a body that is not a JSON object: {(response.text or '')[:200]}"
            elif not JOB_ID.match(str(body.get("id", ""))) or body.get("service") != self.service:
                error = f"202 with an unexpected body: {body}"
            elif body.get("status") != "queued":
                error = f"202 but the job status is {body.get('status')!r}, not 'queued'"
            else:
                job_id = body["id"]
        if error:
            response.failure(error)
            ledger().write(
                "submit",
                service=self.service,
                ok=False,
                status=response.status_code,
                latency_ms=latency_ms,
                error=error,
                request_id=request_id,
            )
        else:
            response.success()
            ledger().write(
                "submit",
                service=self.service,
                ok=True,
                status=202,
                latency_ms=latency_ms,
                job_id=job_id,
                request_id=request_id,
            )


class SttUser(GatewayUser):
    weight = max(1, round(SCENARIO.load.mix.get("stt", 0) * 10))
    service = "stt"
    boundary = "loadtestboundary7d3f"
    # The multipart fields besides the file.
    fields: ClassVar[dict[str, str]] = {"language": "en"}

    def on_start(self) -> None:
        clips = ensure_clips(
            SCENARIO.load.phrases,
            Path(os.environ["LOADTEST_AUDIO_DIR"]) if os.environ.get("LOADTEST_AUDIO_DIR") else None,
        )
        self.bodies = [self._multipart(path.name, path.read_bytes()) for path in clips]
        random.shuffle(self.bodies)
        self.next_body = itertools.cycle(self.bodies)

    def _multipart(self, name: str, audio: bytes) -> bytes:
        head = (
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: audio/wav\r\n\r\n"
        ).encode()
        tail = "".join(f'\r\n--{self.boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}'
                       for k, v in self.fields.items())
        return head + audio + f"{tail}\r\n--{self.boundary}--\r\n".encode()

    @task
    def submit(self) -> None:
        headers = {
            "X-API-Key": api_key(),
            "Content-Type": f"multipart/form-data; boundary={self.boundary}",
        }
        request_id = self.send()
        started = time.perf_counter()
        with self.client.post(
            f"/v1/jobs/{self.service}",
            data=next(self.next_body),
            headers=headers,
            catch_response=True,
            name=f"POST /v1/jobs/{self.service}",
        ) as response:
            self.record(response, started, request_id)


class TtsUser(GatewayUser):
    weight = max(1, round(SCENARIO.load.mix.get("tts", 0) * 10))
    service = "tts"

    @task
    def submit(self) -> None:
        headers = {"X-API-Key": api_key()}
        request_id = self.send()
        started = time.perf_counter()
        with self.client.post(
            "/v1/jobs/tts",
            json={"text": random.choice(SCENARIO.load.texts)},  # noqa: S311
            headers=headers,
            catch_response=True,
            name="POST /v1/jobs/tts",
        ) as response:
            self.record(response, started, request_id)


class MtUser(GatewayUser):
    """Translation jobs: two to four of the scenario's texts as segments, as a dubbing job's STT stage hands on."""

    weight = max(1, round(SCENARIO.load.mix.get("mt", 0) * 10))
    service = "mt"

    @task
    def submit(self) -> None:
        headers = {"X-API-Key": api_key()}
        request_id = self.send()
        started = time.perf_counter()
        segments = random.sample(SCENARIO.load.texts, min(len(SCENARIO.load.texts), random.randint(2, 4)))  # noqa: S311
        with self.client.post(
            "/v1/jobs/mt",
            json={"segments": segments, "target_language": MT_TARGET},
            headers=headers,
            catch_response=True,
            name="POST /v1/jobs/mt",
        ) as response:
            self.record(response, started, request_id)


class DubbingUser(SttUser):
    """Dubbing jobs of the same speech clips (audio: stt -> mt -> tts; workers/dubbing), into the mt users' target
    language."""

    weight = max(1, round(SCENARIO.load.mix.get("dubbing", 0) * 10))
    service = "dubbing"
    fields: ClassVar[dict[str, str]] = {"target_language": MT_TARGET}


USER_CLASSES = [cls for cls in (SttUser, TtsUser, MtUser, DubbingUser)
                if SCENARIO.load.mix.get(cls.service, 0) > 0]
# Locust picks up every concrete User class in this module: remove the ones this scenario gives no load.
# (No loop variable: Locust would take a module-level name bound to a User class for one more user class.)
SttUser.abstract = SttUser not in USER_CLASSES
TtsUser.abstract = TtsUser not in USER_CLASSES
MtUser.abstract = MtUser not in USER_CLASSES
DubbingUser.abstract = DubbingUser not in USER_CLASSES


class ScenarioShape(LoadTestShape):
    """The scenario's stages, one after the other; each change of stage goes into the ledger."""

    def __init__(self) -> None:
        super().__init__()
        self.current: str | None = None

    def tick(self):
        stage = SCENARIO.load.stage_at(self.get_run_time())
        if stage is None:
            return None
        if stage.name != self.current:
            self.current = stage.name
            ledger().write("stage", name=stage.name, users=stage.users, spawn_rate=stage.spawn_rate)
        return stage.users, stage.spawn_rate, USER_CLASSES
