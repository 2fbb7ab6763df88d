"""The lipsync worker on a Wav2Lip-style model built here with random weights (it does not lip-sync: the face box is
re-drawn with noise). Checked: the audio front end equals Wav2Lip's (librosa), the output has one frame per 1/fps of
audio and its MP4's video and audio durations match the audio, only the face box changes, and bad media is named
before any model work."""

from __future__ import annotations

import asyncio
import io
import os
import uuid
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
from bullmq import UnrecoverableError
from media_samples import mux, tone

from workers.core.env import ConfigError, Settings
from workers.lipsync import media
from workers.lipsync.config import LipsyncConfig
from workers.lipsync.model import build_random
from workers.lipsync.render import LipSyncer, pixel_box, source_index
from workers.lipsync.service import LipsyncEngine
from workers.queueing.blobs import BlobStore

FPS = 25
W, H = 160, 120


def make_video(frames: int = 30, audio: bool = False, fmt: str = "mp4") -> bytes:
    """A moving gradient (so every frame differs), H.264 in MP4 (or VP8 in WebM), optionally with a tone."""
    return mux(frames, W, H, FPS, tone(frames / FPS) if audio else None, fmt=fmt)


def make_m4a(seconds: float = 0.5) -> bytes:
    """Audio only, in an MP4 container (what a phone calls .m4a)."""
    return mux(0, audio=tone(seconds))


def make_audio(seconds: float, rate: int = 22050) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    speechish = 0.3 * np.sin(2 * np.pi * 180 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    buf = io.BytesIO()
    sf.write(buf, speechish.astype(np.float32), rate, format="WAV")
    return buf.getvalue()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_random(tmp_path_factory.mktemp("w2l") / "model", channels=8)


def config(model: Path, **env: str) -> LipsyncConfig:
    return LipsyncConfig.from_settings(Settings({"LIPSYNC_MODEL": str(model), "LIPSYNC_CPU_THREADS": "1", **env}))


def test_the_mel_front_end_is_wav2lips() -> None:
    """Wav2Lip's audio.melspectrogram (hparams: 16 kHz, n_fft 800, hop 200, 80 mels 55-7600 Hz, pre-emphasis
    0.97, ref 20 dB, min -100 dB, symmetric to [-4, 4]) written with librosa, as the published code does."""
    import librosa

    audio = media.decode_audio(make_audio(1.3), 60)
    x = np.append(audio[:1], audio[1:] - 0.97 * audio[:-1])
    spec = np.abs(librosa.stft(y=x, n_fft=800, hop_length=200, win_length=800))
    mel = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600) @ spec
    db = 20 * np.log10(np.maximum(1e-5, mel)) - 20
    expected = np.clip(8 * ((db + 100) / 100) - 4, -4, 4)
    got = media.mel_spectrogram(audio)
    assert got.shape == expected.shape == (80, 1 + audio.size // 200)
    np.testing.assert_allclose(got, expected, atol=2e-3)


def test_audio_is_resampled_to_16k_mono() -> None:
    audio = media.decode_audio(make_audio(2.0, rate=44100), 60)
    assert audio.dtype == np.float32 and abs(audio.size / 16000 - 2.0) < 0.01


def test_a_short_video_is_played_back_and_forth() -> None:
    assert [source_index(i, 4) for i in range(9)] == [0, 1, 2, 3, 2, 1, 0, 1, 2]
    assert [source_index(i, 1) for i in range(3)] == [0, 0, 0]


@pytest.mark.parametrize("seconds", [0.7, 2.3])  # shorter and longer than the 1.2-s video
def test_one_frame_per_frame_of_audio_and_only_the_face_box_changes(model, seconds) -> None:
    syncer = LipSyncer(config(model))
    syncer.load()
    video = media.decode_video(make_video(30), 60)
    audio = media.decode_audio(make_audio(seconds), 60)
    box = syncer.config.face_box
    frames = syncer.render(video, audio, box)
    assert len(frames) == round(seconds * FPS)
    x0, y0, x1, y1 = pixel_box(box, W, H)
    for i, f in enumerate(frames):
        src = video.frames[source_index(i, len(video.frames))]
        outside = np.ones((H, W), bool)
        outside[y0:y1, x0:x1] = False
        assert np.array_equal(f[outside], src[outside])
        assert not np.array_equal(f[y0:y1, x0:x1], src[y0:y1, x0:x1])
    assert syncer.render(video, audio, box)[3].tobytes() == frames[3].tobytes()  # deterministic


def test_the_mp4s_video_and_audio_last_as_long_as_the_audio(model) -> None:
    syncer = LipSyncer(config(model))
    syncer.load()
    video = media.decode_video(make_video(30), 60)
    audio = media.decode_audio(make_audio(2.3), 60)
    mp4 = media.encode_mp4(syncer.render(video, audio, syncer.config.face_box), video.fps, audio)
    d = media.durations(mp4)
    seconds = audio.size / 16000
    assert d["frames"] == round(seconds * FPS) and d["fps"] == FPS
    assert abs(d["video"] - seconds) <= 1 / FPS
    assert abs(d["audio"] - seconds) <= 0.1  # AAC adds its encoder delay (1024 samples) at most
    back = media.decode_audio(mp4, 60)
    assert abs(back.size / 16000 - seconds) <= 0.1


@pytest.mark.parametrize("data, message", [
    (os.urandom(5000), "not a readable media container"),
    (b"", "not a readable media container"),
], ids=["random bytes", "empty"])
def test_corrupt_media_is_named(data, message) -> None:
    with pytest.raises(media.MediaError, match=message):
        media.decode_video(data, 60)


def test_an_audio_file_is_not_a_video() -> None:
    with pytest.raises(media.MediaError, match="no video stream"):
        media.decode_video(make_audio(1.0), 60)
    with pytest.raises(media.MediaError, match="no video stream"):
        media.decode_video(make_m4a(), 60)


def test_a_video_without_audio_is_not_audio() -> None:
    with pytest.raises(media.MediaError, match="no audio track"):
        media.decode_audio(make_video(5), 60)


def test_too_long_media_is_named() -> None:
    with pytest.raises(media.MediaError, match=r"longer than 0\.5 s"):
        media.decode_video(make_video(30), 0.5)
    with pytest.raises(media.MediaError, match="longer than 1 s"):
        media.decode_audio(make_audio(2.0), 1)


@pytest.mark.parametrize("env, name", [
    ({"LIPSYNC_MODEL": "/nonexistent"}, "LIPSYNC_MODEL"),
    ({"LIPSYNC_FACE_BOX": "0.5,0.5,0.4,0.9"}, "LIPSYNC_FACE_BOX"),
    ({"LIPSYNC_FACE_BOX": "a,b,c,d"}, "LIPSYNC_FACE_BOX"),
    ({"LIPSYNC_DEVICE": "tpu"}, "LIPSYNC_DEVICE"),
])
def test_bad_settings_are_named(model, env, name) -> None:
    with pytest.raises(ConfigError, match=name):
        config(model, **env)


def test_the_engine_through_redis_blobs(model, redis_url: str) -> None:
    """prepare reads both blobs, run_batch renders and encodes, finish stores the MP4 with a TTL; bad jobs fail
    without retry naming the field."""
    from redis.asyncio import Redis

    async def scenario():
        r = Redis.from_url(redis_url)
        blobs = BlobStore(r, "ls" + uuid.uuid4().hex[:6], "lipsync")
        engine = LipsyncEngine(config(model), blobs, 60)
        engine.load()
        jid = f"lipsync-{uuid.uuid4().hex}"
        vk = await blobs.put(jid, "video", make_video(20, audio=True), 60)
        ak = await blobs.put(jid, "audio", make_audio(1.5), 60)
        job = SimpleNamespace(id=jid, data={"video_key": vk, "audio_key": ak, "face_box": [0.2, 0.2, 0.8, 0.8]})
        item = await engine.prepare(job)
        [out] = engine.run_batch([item])
        record = await engine.finish(job, out)
        stored = await r.get(record["video_key"])
        ttl = await r.ttl(record["video_key"])
        errors = []
        for data in ({"video_key": vk}, {"video_key": vk, "audio_key": ak, "face_box": [0.9, 0, 0.1, 1]},
                     {"video_key": blobs.key(jid, "gone"), "audio_key": ak}, {"video_key": ak, "audio_key": ak},
                     {"video_key": "other:queue:blob:x", "audio_key": ak}):
            try:
                await engine.prepare(SimpleNamespace(id=jid, data=data))
                errors.append(None)
            except UnrecoverableError as exc:
                errors.append(str(exc))
        await engine.completed(job)
        left = await r.exists(vk, ak)
        await r.aclose()
        return item, record, stored, ttl, errors, left

    item, record, stored, ttl, errors, left = asyncio.run(scenario())
    assert record["frames"] == round(1.5 * FPS) and abs(record["duration_s"] - 1.5) <= 1 / FPS
    assert record["model"] == "model (random weights)"  # simulated weights are labelled in the output
    assert item.box == (0.2, 0.2, 0.8, 0.8)
    assert stored is not None and 0 < ttl <= 60 and media.durations(stored)["frames"] == record["frames"]
    assert "'audio_key'" in errors[0]
    assert "face_box" in errors[1]
    assert "missing" in errors[2]
    assert "no video stream" in errors[3]
    assert "outside" in errors[4]
    assert left == 0  # inputs deleted once the completion is recorded


@pytest.fixture
def gateway(redis_url: str, tmp_path: Path):
    from fastapi.testclient import TestClient
    from prometheus_client import CollectorRegistry

    from workers.gateway.app import create_app
    from workers.gateway.config import GatewayConfig

    env = {"REDIS_URL": redis_url, "QUEUE_PREFIX": "lg" + uuid.uuid4().hex[:8], "QUEUES": "stt,lipsync",
           "GATEWAY_STATE_DIR": str(tmp_path / "gw"), "GATEWAY_MAX_VIDEO_BYTES": "400000",
           "GATEWAY_MAX_VIDEO_SECONDS": "3"}
    config = GatewayConfig.from_settings(Settings(env))
    with TestClient(create_app(config, CollectorRegistry())) as client:
        yield client, {"X-API-Key": config.api_key_file.read_text().strip()}, env


def post(client, headers, video: bytes, audio: bytes, **fields: str):
    return client.post("/v1/jobs/lipsync", headers=headers, data=fields,
                       files={"video": ("clip.mp4", video, "video/mp4"), "audio": ("dub.wav", audio, "audio/wav")})


def test_the_gateway_queues_a_lipsync_job_with_both_files(gateway) -> None:
    from bullmq import Job, Queue

    client, headers, env = gateway
    r = post(client, headers, make_video(20, audio=True), make_audio(1.0), face_box="0.2,0.2,0.8,0.8")
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]

    async def read():
        q = Queue("lipsync", {"connection": env["REDIS_URL"], "prefix": env["QUEUE_PREFIX"]})
        try:
            return await Job.fromId(q, job_id)
        finally:
            await q.close()

    job = asyncio.run(read())
    assert job.data["face_box"] == [0.2, 0.2, 0.8, 0.8] and job.data["video_format"] == "MP4"
    assert job.data["video_key"].endswith(":video") and job.data["audio_key"].endswith(":audio")
    assert (job.data["width"], job.data["height"]) == (W, H)
    webm = post(client, headers, make_video(10, fmt="webm"), make_audio(0.5))
    assert webm.status_code == 202, webm.text


@pytest.mark.parametrize("case, status, code, words", [
    ("audio-only MP4 as the video", 415, "no_video_stream", ("'clip.mp4'", "no video stream")),
    ("WAV as the video", 415, "unsupported_video_format", ("'wav'", "MP4")),
    ("corrupt video", 400, "corrupt_video", ("'clip.mp4'", "MP4")),
    ("video over the byte limit", 413, "upload_too_large", ("400000",)),
    ("video over the duration limit", 413, "video_too_long", ("3 s",)),
    ("corrupt audio", 400, "corrupt_audio", ("'dub.wav'",)),
    ("bad face box", 422, "invalid_request", ("face_box", "fractions")),
])
def test_bad_lipsync_uploads_are_named(gateway, case, status, code, words) -> None:
    client, headers, _ = gateway
    video, audio, fields = make_video(10), make_audio(0.5), {}
    if case == "audio-only MP4 as the video":
        video = make_m4a()
    elif case == "WAV as the video":
        video = make_audio(0.5)
    elif case == "corrupt video":
        video = os.urandom(3000)
    elif case == "video over the byte limit":
        video = os.urandom(500_000)
    elif case == "video over the duration limit":
        video = make_video(100)
    elif case == "corrupt audio":
        audio = os.urandom(2000)
    elif case == "bad face box":
        fields = {"face_box": "0.9,0.1,0.2,0.8"}
    r = post(client, headers, video, audio, **fields)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code, error
    for w in words:
        assert w in error["message"], (w, error["message"])


@pytest.mark.slow
def test_a_lipsync_job_through_the_gateway_and_a_worker_process(model, gateway, tmp_path: Path) -> None:
    """python -m workers.worker --service lipsync takes the gateway's job from BullMQ on a real Redis and the
    gateway serves the MP4, whose duration is the audio's."""
    import time

    from workers_testlib import start_worker

    client, headers, env = gateway
    worker, _ = start_worker(tmp_path, "lipsync", "lipsync", {**env, "LIPSYNC_MODEL": str(model),
                                                               "LIPSYNC_CPU_THREADS": "1"})
    try:
        r = post(client, headers, make_video(20), make_audio(1.2))
        assert r.status_code == 202, r.text
        url = r.json()["status_url"]
        deadline = time.monotonic() + 90
        while (state := client.get(url, headers=headers).json())["status"] not in ("completed", "failed"):
            assert time.monotonic() < deadline, state
            time.sleep(0.3)
        assert state["status"] == "completed", (state, worker.log()[-2000:])
        assert state["video_url"] == url + "/video" and "video_key" not in state["result"]
        mp4 = client.get(state["video_url"], headers=headers)
        assert mp4.status_code == 200 and mp4.headers["content-type"] == "video/mp4"
        d = media.durations(mp4.content)
        assert d["frames"] == round(1.2 * FPS) and abs(d["video"] - 1.2) <= 1 / FPS
        assert state["result"]["frames"] == d["frames"]
    finally:
        worker.stop()
