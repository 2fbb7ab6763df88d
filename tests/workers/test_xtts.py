"""The xtts service on a small XTTS built here from its configuration with RANDOM WEIGHTS (tests/workers/coqui_model.py
build_random_xtts; nothing downloaded). Its speech is noise: what is checked is what the worker relies on, through
Coqui's real loading and inference code (the Synthesizer loads the directory, Xtts computes the conditioning latents
from a reference recording and generates): the model directory is recognised or refused, a reference voice is decoded
and cloned, the audio is 24 kHz float32, the same seeds give the same weights and the same audio, a language the model
lacks and other bad jobs fail without retry naming the value and what is allowed, and the gateway takes the job as a
multipart upload (text, language, reference audio) and refuses bad ones with 4xx."""

from __future__ import annotations

import asyncio
import io
import json
import os
import uuid
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
from bullmq import UnrecoverableError
from coqui_model import XTTS_SAMPLE_RATE, build_random_vits, build_random_xtts
from media_samples import tone
from test_worker_config import run_module

from workers.core.env import ConfigError, Settings
from workers.queueing.blobs import BlobStore
from workers.worker.config import WorkerConfig
from workers.xtts.backend import XttsBackend
from workers.xtts.config import XttsConfig
from workers.xtts.service import XttsEngine


def speech_like(seconds: float, rate: int = 16000, fmt: str = "WAV") -> bytes:
    """A reference 'voice' made with numpy (media_samples.tone): any audio clones with random weights."""
    samples = tone(seconds, rate, freq=180.0)
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_random_xtts(tmp_path_factory.mktemp("xtts") / "xtts", seed=0)


@pytest.fixture(scope="module")
def speaker_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("voice") / "default.wav"
    path.write_bytes(speech_like(1.5))
    return path


def xtts_config(model_dir: Path, **env: str) -> XttsConfig:
    return XttsConfig.from_settings(Settings({"XTTS_MODEL_DIR": str(model_dir), **env}))


@pytest.fixture(scope="module")
def backend(model_dir: Path, speaker_wav: Path) -> XttsBackend:
    """Loaded once for the module, through the worker's own configuration, with a default voice."""
    config = WorkerConfig.from_settings(Settings({"XTTS_MODEL_DIR": str(model_dir),
                                                  "XTTS_SPEAKER_WAV": str(speaker_wav)}), "xtts")
    assert config.xtts is not None and config.queue_name == "xtts" and config.metrics.port == 9106
    b = XttsBackend(config.xtts)
    b.load()
    return b


@pytest.fixture(scope="module")
def voice(backend: XttsBackend):
    from workers.xtts.audio import decode_reference

    return backend.clone(decode_reference(speech_like(1.0), "the test voice"))


def test_a_random_xtts_loads_and_speaks_in_a_cloned_voice(backend, voice) -> None:
    """Random weights: the audio is noise; its form is what the worker stores and serves."""
    one = backend.speak("Hello world.", "en", voice)
    two = backend.speak("Hello world. How are you today?", "de", voice)
    default = backend.synthesize("Hello world.", "default")  # the TtsBackend interface: XTTS_SPEAKER_WAV's voice
    for result in (one, two, default):
        assert result.sample_rate == XTTS_SAMPLE_RATE == backend.sample_rate
        assert result.samples.ndim == 1 and result.samples.dtype == np.float32 and result.samples.size > 0
        assert np.isfinite(result.samples).all() and np.abs(result.samples).max() > 0
    assert two.duration_s > one.duration_s  # two sentences, spoken one after the other with a gap
    decoded, rate = sf.read(io.BytesIO(one.wav_bytes()), dtype="float32")
    assert rate == XTTS_SAMPLE_RATE and len(decoded) == len(one.samples)
    assert backend.describe() == "xtts (random weights)"
    assert backend.model.args.gpt_layers == 2  # the small model, not a downloaded one


def test_the_same_seeds_give_the_same_model_and_the_same_audio(model_dir, backend, voice, tmp_path: Path) -> None:
    """build_random_xtts(seed) is reproducible, and so is generation (XTTS samples) under the same torch seed."""
    import torch

    again = build_random_xtts(tmp_path / "again", seed=0)
    a = torch.load(model_dir / "model.pth", weights_only=True)["model"]
    b = torch.load(again / "model.pth", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (again / "config.json").read_text() == (model_dir / "config.json").read_text()

    def spoken(seed: int) -> np.ndarray:
        torch.manual_seed(seed)
        return backend.speak("Testing one two three.", "en", voice).samples

    first = spoken(7)
    assert np.array_equal(first, spoken(7))
    assert not np.array_equal(first, spoken(8))  # the seed matters: the equality above is not vacuous


def test_a_language_the_model_lacks_is_refused_naming_the_allowed_ones(model_dir, backend, voice) -> None:
    with pytest.raises(ValueError, match=r"'klingon' is not one of the model's: \['en', 'es'"):
        backend.speak("Hello.", "klingon", voice)
    with pytest.raises(ConfigError) as err:
        xtts_config(model_dir, XTTS_LANGUAGE="tlh")
    assert err.value.name == "XTTS_LANGUAGE" and "'tlh'" in str(err.value) and "en, es, fr" in str(err.value)
    assert xtts_config(model_dir, XTTS_LANGUAGE="zh-cn").language == "zh-cn"


@pytest.fixture(scope="module")
def other_dirs(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("not-xtts")
    no_checkpoint = root / "no-checkpoint"
    no_checkpoint.mkdir()
    (no_checkpoint / "config.json").write_text((model_dir / "config.json").read_text())
    broken = root / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    return {"vits": build_random_vits(root / "vits"), "no-checkpoint": no_checkpoint, "broken": broken,
            "empty": root}


@pytest.mark.parametrize("which, words", [
    (None, "(required)"),
    ("/nonexistent/xtts", "no such directory"),
    ("vits", 'its config.json says "model": "vits"'),
    ("no-checkpoint", "missing model.pth"),
    ("broken", "its config.json is not JSON"),
    ("empty", "it has no config.json"),
])
def test_a_directory_that_is_not_an_xtts_model_is_refused(other_dirs, which, words) -> None:
    value = "" if which is None else str(other_dirs.get(which, which))
    with pytest.raises(ConfigError) as err:
        WorkerConfig.from_settings(Settings({"XTTS_MODEL_DIR": value} if value else {}), "xtts")
    assert err.value.name == "XTTS_MODEL_DIR" and repr(value) in str(err.value)
    assert 'config.json saying "model": "xtts"' in str(err.value) and words in str(err.value)


def test_the_worker_process_refuses_to_start_on_a_vits_directory(other_dirs) -> None:
    result = run_module("workers.worker", "--service", "xtts", XTTS_MODEL_DIR=str(other_dirs["vits"]))
    assert result.returncode == 2, result.stderr
    assert f"XTTS_MODEL_DIR={str(other_dirs['vits'])!r}; allowed: an XTTS model directory" in result.stderr


@pytest.mark.parametrize("env, name, words", [
    ({"XTTS_DEVICE": "tpu"}, "XTTS_DEVICE", "one of cpu, cuda"),
    ({"XTTS_SPEAKER_WAV": "/nonexistent.wav"}, "XTTS_SPEAKER_WAV", "an existing audio file"),
    ({"XTTS_SPEAKER_WAV": "NOISE"}, "XTTS_SPEAKER_WAV", "could not be read as audio"),
    ({"XTTS_SPEAKER_WAV": "SHORT"}, "XTTS_SPEAKER_WAV", "needs at least 0.33 s"),
    ({"XTTS_MAX_TEXT_CHARS": "0"}, "XTTS_MAX_TEXT_CHARS", "from 1 to 100000"),
])
def test_bad_settings_name_the_setting_and_what_is_allowed(model_dir, tmp_path: Path, env, name, words) -> None:
    if env.get("XTTS_SPEAKER_WAV") == "NOISE":
        (tmp_path / "noise.wav").write_bytes(os.urandom(3000))
        env = {"XTTS_SPEAKER_WAV": str(tmp_path / "noise.wav")}
    elif env.get("XTTS_SPEAKER_WAV") == "SHORT":
        (tmp_path / "short.wav").write_bytes(speech_like(0.1))
        env = {"XTTS_SPEAKER_WAV": str(tmp_path / "short.wav")}
    with pytest.raises(ConfigError) as err:
        xtts_config(model_dir, **env)
    assert err.value.name == name and words in str(err.value), str(err.value)


def job(data: object) -> SimpleNamespace:
    return SimpleNamespace(id=f"xtts-{uuid.uuid4().hex}", data=data)


def test_a_job_through_redis_blobs_clones_its_reference(model_dir, backend, redis_url: str) -> None:
    """prepare reads and decodes the uploaded reference, run_batch clones and speaks, finish stores the WAV with a
    TTL, and the reference is deleted once the completion is recorded; without a reference the default voice speaks."""
    from redis.asyncio import Redis

    async def scenario():
        r = Redis.from_url(redis_url)
        blobs = BlobStore(r, "xt" + uuid.uuid4().hex[:6], "xtts")
        engine = XttsEngine(xtts_config(model_dir), backend, blobs, 60)
        j = job({"text": "Hello there.", "language": "fr"})
        j.data.update(reference_key=await blobs.put(j.id, "reference", speech_like(1.2, fmt="FLAC"), 60),
                      reference_filename="speaker.flac")
        plain = job({"text": "Hello there."})
        items = [await engine.prepare(j), await engine.prepare(plain)]
        outputs = engine.run_batch(items[:1]) + engine.run_batch(items[1:])
        records = [await engine.finish(x, o) for x, o in zip((j, plain), outputs, strict=True)]
        stored = await r.get(records[0]["audio_key"])
        ttl = await r.ttl(records[0]["audio_key"])
        await engine.completed(j)
        left = await r.exists(j.data["reference_key"])
        await r.aclose()
        return items, outputs, records, stored, ttl, left

    items, outputs, records, stored, ttl, left = asyncio.run(scenario())
    assert items[0].reference is not None and items[0].language == "fr"
    assert items[1].reference is None and items[1].language == "en"  # XTTS_LANGUAGE's default
    assert not any(isinstance(o, Exception) for o in outputs), outputs
    assert records[0]["voice"] == "reference" and records[1]["voice"] == "default"
    assert records[0]["sample_rate"] == XTTS_SAMPLE_RATE and records[0]["language"] == "fr"
    assert records[0]["model"] == "xtts (random weights)"  # simulated weights are labelled in every result
    samples, rate = sf.read(io.BytesIO(stored))
    assert rate == XTTS_SAMPLE_RATE and len(samples) / rate == pytest.approx(records[0]["audio_seconds"], abs=0.001)
    assert 0 < ttl <= 60 and left == 0


@pytest.mark.parametrize("data, message", [
    ({"language": "en"}, "job data 'text' must be a non-empty string"),
    ({"text": "   "}, "job data 'text' must be a non-empty string"),
    ({"text": "x" * 61}, r"'text' has 61 characters; the limit is 60 \(XTTS_MAX_TEXT_CHARS\)"),
    ({"text": "Hello.", "language": "klingon"}, r"language 'klingon' is not one of the model's languages: \['en'"),
    ({"text": "Hello.", "reference": "NOISE"}, "reference voice 'noise.wav' could not be read as audio"),
    ({"text": "Hello.", "reference": "SHORT"}, "is 0.10 s of audio; XTTS needs at least 0.33 s"),
    ({"text": "Hello.", "reference": "GONE"}, "is missing"),
    ({"text": "Hello.", "reference_key": "bull:stt:blob:x:input"}, "outside"),
    ({"text": "Hello.", "reference_key": 5}, "'reference_key' must be a string"),
    ({"text": "Hello.", "no_default": True}, r"no reference voice \('reference_key'\) and this worker has no default"),
])
def test_bad_jobs_fail_without_retry_naming_the_value(model_dir, backend, redis_url, monkeypatch, data,
                                                      message) -> None:
    from redis.asyncio import Redis

    data = dict(data)
    if data.pop("no_default", False):
        monkeypatch.setattr(backend, "default_voice", None)

    async def scenario():
        r = Redis.from_url(redis_url)
        blobs = BlobStore(r, "xb" + uuid.uuid4().hex[:6], "xtts")
        engine = XttsEngine(xtts_config(model_dir, XTTS_MAX_TEXT_CHARS="60"), backend, blobs, 60)
        j = job(dict(data))
        kind = j.data.pop("reference", None)
        if kind is not None:
            payload = {"NOISE": os.urandom(2000), "SHORT": speech_like(0.1)}.get(kind)
            key = blobs.key(j.id, "reference")
            if payload is not None:
                await blobs.put(j.id, "reference", payload, 60)
            j.data.update(reference_key=key, reference_filename="noise.wav" if kind == "NOISE" else None)
        try:
            await engine.prepare(j)
        finally:
            await r.aclose()

    with pytest.raises(UnrecoverableError, match=message):
        asyncio.run(scenario())


def test_a_sentence_over_the_models_token_limit_is_refused(model_dir, backend) -> None:
    engine = XttsEngine(xtts_config(model_dir, XTTS_MAX_TEXT_CHARS="5000"), backend, None, 60)  # type: ignore[arg-type]
    with pytest.raises(UnrecoverableError, match=r"sentence 0 .* tokens; the model takes fewer than 402"):
        asyncio.run(engine.prepare(job({"text": "word " * 400})))


# --- the gateway ----------------------------------------------------------------------------------------------------

@pytest.fixture
def gateway(redis_url: str, tmp_path: Path, request):
    from fastapi.testclient import TestClient
    from prometheus_client import CollectorRegistry

    from workers.gateway.app import create_app
    from workers.gateway.config import GatewayConfig

    env = {"REDIS_URL": redis_url, "QUEUE_PREFIX": "xg" + uuid.uuid4().hex[:8], "QUEUES": "xtts",
           "GATEWAY_STATE_DIR": str(tmp_path / "gw"), "GATEWAY_MAX_UPLOAD_BYTES": "300000",
           "GATEWAY_MAX_AUDIO_SECONDS": "5", "GATEWAY_MAX_TEXT_CHARS": "200",
           **getattr(request, "param", {})}
    config = GatewayConfig.from_settings(Settings(env))
    with TestClient(create_app(config, CollectorRegistry())) as client:
        yield client, {"X-API-Key": config.api_key_file.read_text().strip()}, env


def post(client, headers, audio: bytes | None = None, name: str = "voice.wav", **fields: str):
    """POST /v1/jobs/xtts as multipart: ``audio`` as the file field 'reference', ``fields`` as text fields."""
    files = {"reference": (name, audio, "audio/wav")} if audio is not None else None
    if files is None:  # multipart with text fields only
        files = {k: (None, v) for k, v in fields.items()}
        return client.post("/v1/jobs/xtts", headers=headers, files=files)
    return client.post("/v1/jobs/xtts", headers=headers, data=fields, files=files)


def queued(env: dict[str, str], job_id: str):
    from bullmq import Job, Queue

    async def read():
        q = Queue("xtts", {"connection": env["REDIS_URL"], "prefix": env["QUEUE_PREFIX"]})
        try:
            return await Job.fromId(q, job_id)
        finally:
            await q.close()

    return asyncio.run(read())


def test_the_gateway_queues_an_xtts_job_with_its_reference(gateway, redis_client) -> None:
    client, headers, env = gateway
    reference = speech_like(1.0)
    r = post(client, headers, reference, text="  Hallo Welt.  ", language="de")
    assert r.status_code == 202, r.text
    assert r.json()["service"] == "xtts" and r.json()["id"].startswith("xtts-")
    data = queued(env, r.json()["id"]).data
    assert data["text"] == "Hallo Welt." and data["language"] == "de"
    assert data["reference_key"] == f"{env['QUEUE_PREFIX']}:xtts:blob:{r.json()['id']}:reference"
    assert redis_client.get(data["reference_key"]) == reference
    assert data["reference_filename"] == "voice.wav" and data["reference_seconds"] == pytest.approx(1.0)


@pytest.mark.parametrize("case, status, code, words", [
    ("no text", 422, "invalid_request", ("field 'text' is required",)),
    ("empty text", 422, "empty_text", ("send 1 to 200 characters",)),
    ("text over the limit", 422, "text_too_long", ("201 characters; the limit is 200",)),
    ("unknown language", 422, "unknown_language", ("'klingon'", "['en', 'es', 'fr'")),
    ("no reference and no default voice", 422, "reference_required", ("field 'reference' is required",
                                                                       "XTTS_SPEAKER_WAV")),
    ("reference as a text field", 422, "invalid_request", ("'reference' must be a file upload",)),
    ("corrupt reference", 400, "corrupt_audio", ("'noise.wav'", "WAV, FLAC, MP3, OGG")),
    ("reference too short", 422, "reference_too_short", ("0.1 s", "at least 0.33 s")),
    ("reference over the duration limit", 413, "audio_too_long", ("limit of 5 s",)),
    ("reference over the byte limit", 413, "upload_too_large", ("the limit is 300000 bytes",)),
    ("JSON body", 415, "unsupported_media_type", ("multipart/form-data", "'text'")),
])
def test_bad_xtts_requests_are_named(gateway, case, status, code, words) -> None:
    client, headers, _ = gateway
    if case == "no text":
        r = post(client, headers, speech_like(1.0), language="en")
    elif case == "empty text":
        r = post(client, headers, speech_like(1.0), text=" ")
    elif case == "text over the limit":
        r = post(client, headers, speech_like(1.0), text="x" * 201)
    elif case == "unknown language":
        r = post(client, headers, speech_like(1.0), text="Hi.", language="klingon")
    elif case == "no reference and no default voice":
        r = post(client, headers, text="Hi.")
    elif case == "reference as a text field":
        r = post(client, headers, text="Hi.", reference="hello")
    elif case == "corrupt reference":
        r = post(client, headers, os.urandom(2000), name="noise.wav", text="Hi.")
    elif case == "reference too short":
        r = post(client, headers, speech_like(0.1), text="Hi.")
    elif case == "reference over the duration limit":
        r = post(client, headers, speech_like(6.0, rate=8000), text="Hi.")
    elif case == "reference over the byte limit":
        r = post(client, headers, os.urandom(400_000), text="Hi.")
    else:
        r = client.post("/v1/jobs/xtts", headers=headers, json={"text": "Hi."})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code, error
    for w in words:
        assert w in error["message"], (w, error["message"])


@pytest.mark.parametrize("gateway", [{"XTTS_DEFAULT_VOICE": "true", "XTTS_LANGUAGES": "en,de"}], indirect=True)
def test_with_a_default_voice_the_reference_is_optional(gateway) -> None:
    client, headers, env = gateway
    r = post(client, headers, text="Hello.")
    assert r.status_code == 202, r.text
    data = queued(env, r.json()["id"]).data
    assert "reference_key" not in data and "language" not in data
    r = post(client, headers, text="Bonjour.", language="fr")  # XTTS_LANGUAGES names the model's languages
    assert r.status_code == 422 and "['en', 'de']" in r.json()["error"]["message"]


@pytest.mark.parametrize("env, name", [
    ({"XTTS_LANGUAGES": "en;de"}, "XTTS_LANGUAGES"),
    ({"XTTS_DEFAULT_VOICE": "yes"}, "XTTS_DEFAULT_VOICE"),
])
def test_bad_gateway_xtts_settings_are_named(env, name) -> None:
    from workers.gateway.config import GatewayConfig

    with pytest.raises(ConfigError) as err:
        GatewayConfig.from_settings(Settings(env))
    assert err.value.name == name


@pytest.mark.slow
def test_xtts_jobs_through_the_gateway_and_a_worker_process(model_dir, redis_url: str, tmp_path: Path) -> None:
    """python -m workers.worker --service xtts takes the gateway's jobs from BullMQ on a real Redis: one cloning an
    uploaded reference, one in the default voice; the gateway serves the 24 kHz WAVs. Random weights: noise."""
    from fastapi.testclient import TestClient
    from prometheus_client import CollectorRegistry
    from test_roundtrip import metric, wait_done
    from workers_testlib import start_worker

    from workers.gateway.app import create_app
    from workers.gateway.config import GatewayConfig

    voice_file = tmp_path / "default.wav"
    voice_file.write_bytes(speech_like(1.0))
    env = {"REDIS_URL": redis_url, "QUEUE_PREFIX": "xw" + uuid.uuid4().hex[:8], "QUEUES": "xtts"}
    worker, port = start_worker(tmp_path, "xtts", "xtts", {**env, "XTTS_MODEL_DIR": str(model_dir),
                                                          "XTTS_SPEAKER_WAV": str(voice_file)}, ready_timeout=120)
    try:
        config = GatewayConfig.from_settings(Settings({**env, "GATEWAY_STATE_DIR": str(tmp_path / "gw"),
                                                       "XTTS_DEFAULT_VOICE": "true"}))
        with TestClient(create_app(config, CollectorRegistry())) as client:
            headers = {"X-API-Key": config.api_key_file.read_text().strip()}
            ids = [post(client, headers, speech_like(1.2), text="Hello world.", language="es").json()["id"],
                   post(client, headers, text="Hello world.").json()["id"]]
            done = wait_done(client, ids, headers, 90)
            assert [d["status"] for d in done] == ["completed"] * 2, (done, worker.log()[-3000:])
            for d in done:
                assert d["audio_url"] == f"/v1/jobs/{d['id']}/audio" and "audio_key" not in d["result"]
                wav = client.get(d["audio_url"], headers=headers)
                assert wav.status_code == 200 and wav.headers["content-type"] == "audio/wav"
                samples, rate = sf.read(io.BytesIO(wav.content))
                assert rate == XTTS_SAMPLE_RATE and len(samples) > 0
            assert [d["result"]["voice"] for d in done] == ["reference", "default"]
            assert done[0]["result"]["language"] == "es" and done[0]["result"]["model"] == "xtts (random weights)"
        assert metric(port, "model_worker_jobs_total", service="xtts", status="completed") == 2
        info = [line for line in worker.log().splitlines() if '"model loaded"' in line]
        assert info and json.loads(info[0])["model"] == "xtts (random weights)"
    finally:
        worker.stop()

