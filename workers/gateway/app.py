"""The gateway's FastAPI application: routes, authentication, rate limiting and validation.

No `from __future__ import annotations` here: FastAPI reads the dependency annotations of the routes
defined inside create_app at runtime, and string annotations would not resolve to the local `Key`.
"""

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

import redis
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from faster_whisper.tokenizer import _LANGUAGE_CODES
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from workers.core.env import ConfigError
from workers.dubbing.flow import gateway_flow
from workers.gateway.audio_check import ALLOWED_TEXT as AUDIO_FORMATS
from workers.gateway.audio_check import check_audio
from workers.gateway.backend import JobBackend
from workers.gateway.body_limit import BodyLimitMiddleware
from workers.gateway.config import GatewayConfig
from workers.gateway.errors import ApiError, install_error_handlers, validation_error
from workers.gateway.keys import ApiKey, ApiKeyStore, RedisApiKeyStore
from workers.gateway.metrics import GatewayMetrics, MetricsMiddleware
from workers.gateway.ratelimit import RedisTokenBuckets, TokenBuckets
from workers.gateway.schemas import (
    DUBBING_UPLOAD_SCHEMA,
    ERROR_RESPONSES,
    LIPSYNC_UPLOAD_SCHEMA,
    MT_BODY_SCHEMA,
    STT_UPLOAD_SCHEMA,
    TTS_BODY_SCHEMA,
    XTTS_UPLOAD_SCHEMA,
    JobAccepted,
    JobStatus,
    MtRequest,
    TtsRequest,
)
from workers.gateway.video_check import ALLOWED_TEXT as VIDEO_FORMATS
from workers.gateway.video_check import check_video, is_video
from workers.lipsync.config import parse_box
from workers.mt.config import LANGUAGE
from workers.queueing.jobs import new_job_id
from workers.xtts.config import MIN_REFERENCE_SECONDS

log = logging.getLogger(__name__)
STT_PATH = "/v1/jobs/stt"
LIPSYNC_PATH = "/v1/jobs/lipsync"
DUBBING_PATH = "/v1/jobs/dubbing"
XTTS_PATH = "/v1/jobs/xtts"
DUBBING_NEEDS = ("dubbing", "stt", "mt", "tts")


def create_app(config: GatewayConfig, registry: CollectorRegistry | None = None) -> FastAPI:
    registry = registry or CollectorRegistry()
    metrics = GatewayMetrics(registry, sorted(config.queues))
    shared = None
    if config.key_store == "redis":
        # Keys and rate limits live in Redis, so every replica behind the Service accepts the same keys and a key's
        # limit is one limit, not one per replica; a restart keeps both.
        shared = redis.Redis.from_url(config.policy.redis_url, socket_timeout=5, socket_connect_timeout=5)
        keys = RedisApiKeyStore(shared, config.policy.prefix)
        buckets = RedisTokenBuckets(shared, config.policy.prefix, config.rate_per_s, config.rate_burst)
    else:
        keys = ApiKeyStore(config.state_dir)
        buckets = TokenBuckets(config.rate_per_s, config.rate_burst)
    # With the Redis store, Redis may not answer yet when the gateway starts (it starts beside it): the gateway still
    # starts, /readyz says Redis is unreachable, and the first key is registered on the first request that finds it.
    pending_init = [False]
    try:
        keys.load_or_init(config.api_key_file)
    except redis.RedisError as exc:
        pending_init[0] = True
        log.warning("the API key store does not answer yet; keys are registered once it does",
                    extra={"store": keys.path, "error": type(exc).__name__})
    services = sorted(config.queues)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.backend = JobBackend(config.policy, config.queues, config.queue_timeout_s)
        log.info("gateway started", extra={"queues": config.queues, "state_dir": str(config.state_dir)})
        try:
            yield
        finally:
            await app.state.backend.close()
            if shared is not None:
                shared.close()

    # No Swagger/ReDoc pages: they load their scripts from a public CDN; the spec itself is served.
    app = FastAPI(title="Model gateway", version="1.0.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Submit speech-to-text and text-to-speech jobs; poll for their results.")
    install_error_handlers(app)
    app.add_middleware(
        BodyLimitMiddleware,
        limit_for=lambda path: {STT_PATH: config.max_upload_bytes, LIPSYNC_PATH: config.max_video_bytes,
                                DUBBING_PATH: config.max_video_bytes,
                                XTTS_PATH: config.max_upload_bytes}.get(path, config.max_json_bytes),
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    def backend(request: Request) -> JobBackend:
        return request.app.state.backend

    def authenticate(request: Request) -> ApiKey:
        auth = request.headers.get("authorization")
        presented = request.headers.get("x-api-key")
        if auth is not None:
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise ApiError(401, "invalid_authorization_header", "Authorization header must be "
                               "'Bearer <key>'; got scheme " + repr(scheme), {"WWW-Authenticate": "Bearer"})
            presented = token.strip()
        if not presented:
            raise ApiError(401, "missing_api_key", "no API key: send 'Authorization: Bearer <key>' or "
                           "'X-API-Key: <key>'", {"WWW-Authenticate": "Bearer"})
        try:
            if pending_init[0]:
                keys.load_or_init(config.api_key_file)
                pending_init[0] = False
            key = keys.verify(presented)
            wait = buckets.take(key.key_id) if key is not None else 0.0
        except redis.RedisError as exc:  # the shared key store is down: say so instead of a bare 500
            raise ApiError(503, "key_store_unavailable", f"cannot check the API key: the key store "
                           f"({keys.path}) does not answer ({type(exc).__name__})", {"Retry-After": "5"}) from exc
        if key is None:
            raise ApiError(401, "invalid_api_key", f"API key {presented[:6]!r}... is not valid",
                           {"WWW-Authenticate": "Bearer"})
        if wait > 0:
            retry = TokenBuckets.retry_after_header(wait)
            raise ApiError(429, "rate_limited", f"rate limit of {config.rate_per_s:g} requests/s "
                           f"(burst {config.rate_burst}) exceeded for key {key.key_id}; retry in {retry} s",
                           {"Retry-After": retry})
        return key

    Key = Annotated[ApiKey, Depends(authenticate)]

    async def multipart_form(request: Request, send: str, max_files: int, max_fields: int) -> Any:
        """The request's multipart form; another content type is 415 saying what to send."""
        ctype = request.headers.get("content-type", "")
        if not ctype.startswith("multipart/form-data"):
            raise ApiError(415, "unsupported_media_type", f"content type {ctype or 'none'!r} is not accepted; send "
                           f"multipart/form-data with {send}")
        return await request.form(max_files=max_files, max_fields=max_fields)

    def accepted(job_id: str, service: str) -> JSONResponse:
        url = f"/v1/jobs/{job_id}"
        body = JobAccepted(id=job_id, service=service, status="queued", status_url=url)
        return JSONResponse(body.model_dump(), status_code=202, headers={"Location": url})

    @app.post(STT_PATH, status_code=202, response_model=JobAccepted, responses=ERROR_RESPONSES,
              openapi_extra={"requestBody": STT_UPLOAD_SCHEMA}, summary="Submit audio for transcription")
    async def submit_stt(request: Request, key: Key) -> JSONResponse:
        form = await multipart_form(request, "the audio in field 'file'", max_files=1, max_fields=4)
        upload = form.get("file")
        if upload is None:
            raise ApiError(422, "invalid_request", "field 'file' is required (the audio upload); "
                           f"got fields {sorted(form.keys())}")
        if not isinstance(upload, UploadFile):
            raise ApiError(422, "invalid_request", "field 'file' must be a file upload, got a text value "
                           f"{str(upload)[:40]!r}")
        language = form.get("language")
        if language is not None and (not isinstance(language, str) or language not in _LANGUAGE_CODES):
            raise ApiError(422, "invalid_request", f"field 'language': {str(language)[:20]!r} is not a "
                           "supported language code (ISO 639-1, such as 'en', 'de', 'fr')")
        data = await upload.read()
        name = upload.filename or "upload"
        info = await run_in_threadpool(check_audio, data, name, config.max_audio_seconds)
        job_id = new_job_id("stt")
        be = backend(request)
        input_key = await be.store_input("stt", job_id, data)
        await be.submit("stt", job_id, {"input_key": input_key, "format": info.format, "filename": name,
                                        "audio_seconds": info.duration_s, "language": language,
                                        "owner": key.key_id})
        metrics.submitted.labels("stt").inc()
        return accepted(job_id, "stt")

    def check_text(text: str) -> str:
        text = text.strip()
        if not text:
            raise ApiError(422, "empty_text", "field 'text' is empty; send 1 to "
                           f"{config.max_text_chars} characters")
        if len(text) > config.max_text_chars:
            raise ApiError(422, "text_too_long", f"field 'text' has {len(text)} characters; the limit is "
                           f"{config.max_text_chars}")
        return text

    @app.post("/v1/jobs/tts", status_code=202, response_model=JobAccepted, responses=ERROR_RESPONSES,
              openapi_extra={"requestBody": TTS_BODY_SCHEMA}, summary="Submit text for synthesis")
    async def submit_tts(request: Request, key: Key) -> JSONResponse:
        if "tts" not in config.queues:
            raise ApiError(404, "unknown_service", f"service 'tts' is not configured; services: {services}")
        raw = await request.body()
        try:
            body = TtsRequest.model_validate_json(raw or b"null")
        except ValidationError as exc:
            raise validation_error(exc) from None
        text = check_text(body.text)
        if body.voice not in config.voices:
            raise ApiError(422, "unknown_voice", f"voice {body.voice[:40]!r} is not available; "
                           f"voices: {list(config.voices)}")
        job_id = new_job_id("tts")
        await backend(request).submit("tts", job_id, {"text": text, "voice": body.voice, "owner": key.key_id})
        metrics.submitted.labels("tts").inc()
        return accepted(job_id, "tts")

    @app.post(XTTS_PATH, status_code=202, response_model=JobAccepted, responses=ERROR_RESPONSES,
              openapi_extra={"requestBody": XTTS_UPLOAD_SCHEMA}, summary="Submit text to speak in a cloned voice")
    async def submit_xtts(request: Request, key: Key) -> JSONResponse:
        if "xtts" not in config.queues:
            raise ApiError(404, "unknown_service", f"service 'xtts' is not configured; services: {services}")
        form = await multipart_form(request, "the text in field 'text' (and optionally the voice to clone in field "
                                    "'reference')", max_files=1, max_fields=4)
        text = form.get("text")
        if text is None:
            raise ApiError(422, "invalid_request", f"field 'text' is required; got fields {sorted(form.keys())}")
        if not isinstance(text, str):
            raise ApiError(422, "invalid_request", "field 'text' must be a text field, got a file upload")
        text = check_text(text)
        language = form.get("language")
        if language is not None and (not isinstance(language, str) or language not in config.xtts_languages):
            raise ApiError(422, "unknown_language", f"field 'language': {str(language)[:20]!r} is not one of the xtts "
                           f"model's languages: {list(config.xtts_languages)}")
        upload = form.get("reference")
        if upload is not None and not isinstance(upload, UploadFile):
            raise ApiError(422, "invalid_request", "field 'reference' must be a file upload (the voice to clone), "
                           f"got a text value {str(upload)[:40]!r}")
        if upload is None and not config.xtts_default_voice:
            raise ApiError(422, "reference_required", "field 'reference' is required: the xtts service has no default "
                           "voice (XTTS_SPEAKER_WAV); upload WAV, FLAC, MP3 or OGG speech of the voice to clone")
        job_id = new_job_id("xtts")
        data: dict[str, Any] = {"text": text, "owner": key.key_id}
        if language is not None:
            data["language"] = language
        be = backend(request)
        if upload is not None:
            audio = await upload.read()
            name = upload.filename or "reference"
            info = await run_in_threadpool(check_audio, audio, name, config.max_audio_seconds)
            if info.duration_s < MIN_REFERENCE_SECONDS:
                raise ApiError(422, "reference_too_short", f"uploaded reference {name!r} is {info.duration_s:g} s; "
                               f"XTTS needs at least {MIN_REFERENCE_SECONDS} s of the speaker (3 to 10 s is best)")
            data.update(reference_key=await be.store_input("xtts", job_id, audio, "reference"),
                        reference_filename=name, reference_seconds=info.duration_s)
        await be.submit("xtts", job_id, data)
        metrics.submitted.labels("xtts").inc()
        return accepted(job_id, "xtts")

    @app.post("/v1/jobs/mt", status_code=202, response_model=JobAccepted, responses=ERROR_RESPONSES,
              openapi_extra={"requestBody": MT_BODY_SCHEMA}, summary="Submit text for translation")
    async def submit_mt(request: Request, key: Key) -> JSONResponse:
        if "mt" not in config.queues:
            raise ApiError(404, "unknown_service", f"service 'mt' is not configured; services: {services}")
        raw = await request.body()
        try:
            body = MtRequest.model_validate_json(raw or b"null")
        except ValidationError as exc:
            raise validation_error(exc) from None
        if (body.segments is None) == (body.text is None):
            raise ApiError(422, "invalid_request", "send exactly one of 'segments' (a list of strings) and 'text'")
        segments = body.segments if body.segments is not None else [body.text or ""]
        if not segments or len(segments) > config.max_segments:
            raise ApiError(422, "invalid_request", f"'segments' has {len(segments)} entries; send 1 to "
                           f"{config.max_segments}")
        empty = [i for i, s in enumerate(segments) if not s.strip()]
        if empty:
            raise ApiError(422, "empty_text", f"segment(s) {empty[:5]} are empty")
        long = [i for i, s in enumerate(segments) if len(s) > config.max_text_chars]
        if long:
            raise ApiError(422, "text_too_long", f"segment(s) {long[:5]} are over {config.max_text_chars} "
                           "characters")
        target = body.target_language
        check_target(target)
        job_id = new_job_id("mt")
        data = {"segments": segments, "target_language": target, "owner": key.key_id}
        if body.source_language is not None:
            data["source_language"] = body.source_language
        await backend(request).submit("mt", job_id, data)
        metrics.submitted.labels("mt").inc()
        return accepted(job_id, "mt")

    @app.post(LIPSYNC_PATH, status_code=202, response_model=JobAccepted, responses=ERROR_RESPONSES,
              openapi_extra={"requestBody": LIPSYNC_UPLOAD_SCHEMA}, summary="Submit a video and audio for lip-sync")
    async def submit_lipsync(request: Request, key: Key) -> JSONResponse:
        if "lipsync" not in config.queues:
            raise ApiError(404, "unknown_service", f"service 'lipsync' is not configured; services: {services}")
        form = await multipart_form(request, "the files 'video' and 'audio'", max_files=2, max_fields=4)
        uploads = {}
        for field in ("video", "audio"):
            upload = form.get(field)
            if not isinstance(upload, UploadFile):
                raise ApiError(422, "invalid_request", f"field {field!r} must be a file upload; got fields "
                               f"{sorted(form.keys())}")
            uploads[field] = (await upload.read(), upload.filename or field)
        box = form.get("face_box")
        data: dict[str, Any] = {"owner": key.key_id}
        if box is not None:
            try:
                data["face_box"] = list(parse_box("face_box", str(box)))
            except ConfigError as exc:
                raise ApiError(422, "invalid_request", str(exc)) from None
        video = await run_in_threadpool(check_video, *uploads["video"], config.max_video_seconds)
        audio = await run_in_threadpool(check_audio, *uploads["audio"], config.max_video_seconds)
        job_id = new_job_id("lipsync")
        be = backend(request)
        data["video_key"] = await be.store_input("lipsync", job_id, uploads["video"][0], "video")
        data["audio_key"] = await be.store_input("lipsync", job_id, uploads["audio"][0], "audio")
        data.update(video_format=video.format, width=video.width, height=video.height,
                    audio_seconds=audio.duration_s)
        await be.submit("lipsync", job_id, data)
        metrics.submitted.labels("lipsync").inc()
        return accepted(job_id, "lipsync")

    def check_target(target: str) -> None:
        known = config.mt_target_languages
        if (known and target not in known) or not LANGUAGE.match(target):
            allowed = list(known) if known else "a language code such as 'de'"
            raise ApiError(422, "unknown_language", f"target_language {target[:20]!r} is not available; "
                           f"allowed: {allowed}")

    @app.post(DUBBING_PATH, status_code=202, response_model=JobAccepted, responses=ERROR_RESPONSES,
              openapi_extra={"requestBody": DUBBING_UPLOAD_SCHEMA}, summary="Dub a video or an audio file")
    async def submit_dubbing(request: Request, key: Key) -> JSONResponse:
        missing = [s for s in DUBBING_NEEDS if s not in config.queues]
        if missing:
            raise ApiError(404, "unknown_service", f"dubbing needs the queues {list(DUBBING_NEEDS)}; not configured: "
                           f"{missing}; services: {services}")
        form = await multipart_form(request, "the media in field 'file' and 'target_language'", max_files=1,
                                    max_fields=6)
        upload, target = form.get("file"), form.get("target_language")
        if not isinstance(upload, UploadFile):
            raise ApiError(422, "invalid_request", "field 'file' must be a file upload (a video or audio); got "
                           f"fields {sorted(form.keys())}")
        if not isinstance(target, str):
            raise ApiError(422, "invalid_request", "field 'target_language' is required (a language code)")
        check_target(target)
        voice = form.get("voice") or "default"
        if voice not in config.voices:
            raise ApiError(422, "unknown_voice", f"voice {str(voice)[:40]!r} is not available; voices: "
                           f"{list(config.voices)}")
        media = await upload.read()
        name = upload.filename or "upload"
        video = await run_in_threadpool(is_video, media)
        dubbing_id = new_job_id("dubbing")
        be = backend(request)
        data: dict[str, Any] = {"target_language": target, "owner": key.key_id, "voice": voice, "filename": name}
        if video:
            info = await run_in_threadpool(check_video, media, name, config.max_video_seconds)
            if not info.has_audio:
                raise ApiError(422, "no_audio_track", f"uploaded video {name!r} has no audio track: there is no "
                               "speech to dub")
            if "lipsync" not in config.queues:
                raise ApiError(422, "lipsync_not_configured", f"uploaded file {name!r} is a video, and the lipsync "
                               "service is not configured: send its audio only")
            data["video_key"] = await be.store_input("lipsync", dubbing_id, media, "video")
            seconds = info.duration_s
        else:
            try:
                seconds = (await run_in_threadpool(check_audio, media, name, config.max_audio_seconds)).duration_s
            except ApiError as exc:
                # Neither a video nor audio: say both are allowed (check_audio's message names audio only).
                if exc.code != "corrupt_audio":
                    raise
                raise ApiError(400, "corrupt_media", f"uploaded file {name!r} could not be read as a video or as "
                               f"audio; send a video ({VIDEO_FORMATS}) with an audio track, or {AUDIO_FORMATS} "
                               "audio") from None
        stt_key = await be.store_input("stt", dubbing_id, media)
        stt_data = {"input_key": stt_key, "filename": name, "audio_seconds": seconds, "language": None,
                    "owner": key.key_id, "dubbing_id": dubbing_id}
        await be.submit_flow(gateway_flow(config.policy, config.queues, dubbing_id, data, stt_data))
        metrics.submitted.labels("dubbing").inc()
        return accepted(dubbing_id, "dubbing")

    async def stage_view(request: Request, view: Any) -> dict[str, Any]:
        """Each stage of a dubbing job: its jobs' states, and when the first started and the last finished."""
        out: dict[str, Any] = {}
        # Stage jobs the orchestrator removed when the dubbing job failed (no worker had taken them).
        cancelled = set((view.data or {}).get("cancelled") or [])
        for stage, ids in ((view.data or {}).get("stages") or {}).items():
            jobs = [await backend(request).get(j) for j in ids]
            states = [j.state if j else "cancelled" if jid in cancelled else "missing"
                      for jid, j in zip(ids, jobs, strict=True)]
            started = [j.started_ms for j in jobs if j and j.started_ms]
            finished = [j.finished_ms for j in jobs if j and j.finished_ms]
            status = next((s for s in ("failed", "missing", "active", "waiting", "delayed", "prioritized", "cancelled")
                           if s in states), "completed")
            out[stage] = {
                "status": status, "jobs": len(ids), "completed": states.count("completed"),
                "cancelled": states.count("cancelled"),
                "started_at_ms": min(started) if started else None,
                "finished_at_ms": max(finished) if status == "completed" and finished else None,
                "seconds": round((max(finished) - min(started)) / 1000, 3)
                if status == "completed" and started and finished else None,
                "errors": [j.error for j in jobs if j and j.state == "failed" and j.error][:3],
            }
        return out

    @app.post("/v1/jobs/{service}", responses=ERROR_RESPONSES, include_in_schema=False)
    async def submit_unknown(service: str, key: Key) -> None:
        raise ApiError(404, "unknown_service", f"service {service[:40]!r} is unknown; services: {services}")

    async def owned_job(request: Request, job_id: str, key: ApiKey) -> Any:
        view = await backend(request).get(job_id)
        # Another key's job answers like a missing one: job ids are not proof of access.
        if view is None or view.owner != key.key_id:
            raise ApiError(404, "job_not_found", f"job {job_id[:80]!r} was not found (ids look like "
                           "'stt-<32 hex>'; results are kept for "
                           f"{config.policy.result_ttl_s} s)")
        return view

    @app.get("/v1/jobs/{job_id}", response_model=JobStatus, responses=ERROR_RESPONSES, summary="Job status")
    async def job_status(request: Request, job_id: str, key: Key) -> JobStatus:
        view = await owned_job(request, job_id, key)
        result = view.result
        audio_url = video_url = None
        if isinstance(result, dict) and result.get("audio_key"):
            result = {k: v for k, v in result.items() if k != "audio_key"}
            audio_url = f"/v1/jobs/{job_id}/audio"
        if isinstance(result, dict) and result.get("video_key"):
            result = {k: v for k, v in result.items() if k != "video_key"}
            video_url = f"/v1/jobs/{job_id}/video"
        stages, error = None, view.error
        if view.service == "dubbing":
            stages = await stage_view(request, view)
            failed = [s for s, v in stages.items() if v["status"] in ("failed", "missing")]
            if view.state == "failed" and failed:
                detail = "; ".join(stages[failed[0]]["errors"]) or view.error
                error = f"stage {failed[0]} failed: {detail}"
            result = {k: v for k, v in result.items() if k != "stages"} if isinstance(result, dict) else result
        return JobStatus(id=view.id, service=view.service, status=view.state, result=result, error=error,
                         attempts_made=view.attempts_made, timings=view.timings(), audio_url=audio_url,
                         video_url=video_url, stages=stages)

    @app.get("/v1/jobs/{job_id}/audio", responses={**ERROR_RESPONSES, 200: {"content": {"audio/wav": {}}}},
             response_class=Response, summary="Synthesized audio of a completed TTS job")
    async def job_audio(request: Request, job_id: str, key: Key) -> Response:
        view = await owned_job(request, job_id, key)
        if view.state != "completed":
            raise ApiError(404, "audio_not_available", f"job {job_id!r} is {view.state!r}; audio exists "
                           "only for completed tts jobs")
        audio = await backend(request).output(view)
        if audio is None:
            raise ApiError(404, "audio_not_available", f"job {job_id!r} has no stored audio (not a tts job, "
                           "or its audio expired)")
        return Response(audio, media_type="audio/wav")

    @app.get("/v1/jobs/{job_id}/video", responses={**ERROR_RESPONSES, 200: {"content": {"video/mp4": {}}}},
             response_class=Response, summary="The lip-synced MP4 of a completed lipsync job")
    async def job_video(request: Request, job_id: str, key: Key) -> Response:
        view = await owned_job(request, job_id, key)
        if view.state != "completed":
            raise ApiError(404, "video_not_available", f"job {job_id!r} is {view.state!r}; a video exists only "
                           "for completed lipsync jobs")
        video = await backend(request).output(view, "video_key")
        if video is None:
            raise ApiError(404, "video_not_available", f"job {job_id!r} has no stored video (not a lipsync job, "
                           "or its video expired)")
        return Response(video, media_type="video/mp4")

    @app.get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: Redis reachable", responses={503: {"model": dict[str, str]}})
    async def readyz(request: Request) -> JSONResponse:
        ok = await backend(request).ping()
        body = {"status": "ready" if ok else "redis unreachable"}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics_endpoint() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app
