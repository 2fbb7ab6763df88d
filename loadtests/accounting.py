"""No-loss accounting: after the load, every job the gateway accepted is polled through the API until it is
finished (bounded), so that submitted = completed + failed (with the reason) + lost.

A job is lost when the gateway no longer knows it (404) or it is still not finished at the deadline (its
last state is kept as the reason). Polls stay under the gateway's per-key rate limit, which the load shared.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from loadtests.ledger import Submission

TERMINAL = ("completed", "failed", "invalid")


def result_problem(service: str, body: dict[str, Any]) -> str | None:
    """Why a completed job's result is not a result: a transcript for STT, audio of some length for TTS."""
    result = body.get("result")
    if service == "stt":
        text = result.get("text") if isinstance(result, dict) else None
        if not isinstance(text, str) or not text.strip():
            return f"completed without a transcript (result text {text!r:.40})"
    elif service == "tts":
        seconds = result.get("audio_seconds") if isinstance(result, dict) else None
        if not isinstance(seconds, int | float) or seconds <= 0:
            return f"completed without audio (audio_seconds {seconds!r})"
        if not body.get("audio_url"):
            return "completed without an audio_url to fetch the audio from"
    elif service == "dubbing":
        seconds = result.get("dubbed_seconds") if isinstance(result, dict) else None
        if not isinstance(seconds, int | float) or seconds <= 0:
            return f"completed without dubbed audio (dubbed_seconds {seconds!r})"
        if not (body.get("audio_url") or body.get("video_url")):
            return "completed without an audio_url or video_url to fetch the dubbed media from"
        stages = body.get("stages") or {}
        unfinished = {k: v.get("status") for k, v in stages.items() if v.get("status") != "completed"}
        if unfinished or not stages:
            return f"completed with stages not completed: {unfinished or 'no stages'}"
    return None


@dataclass
class JobOutcome:
    job_id: str
    service: str
    submitted_at: float
    state: str = "unknown"
    error: str | None = None
    total_s: float | None = None
    queue_wait_s: float | None = None
    processing_s: float | None = None
    attempts: int | None = None
    polls: int = 0
    worker: str | None = None  # the pod (worker) whose run completed the job, from the result
    finished_at: float | None = None  # BullMQ's finishedOn, epoch seconds
    # A pipeline job (dubbing): each stage's status, job count and seconds (GET /v1/jobs/<id> `stages`), and the
    # source media's length.
    stages: dict[str, Any] | None = None
    media_seconds: float | None = None

    def stage_jobs(self) -> dict[str, str]:
        """A dubbing job's stage jobs, id -> stage (their ids derive from the dubbing id: workers/dubbing/flow.py)."""
        from workers.dubbing.flow import child_id

        return {child_id(self.job_id, stage, i): stage
                for stage, view in (self.stages or {}).items() for i in range(int(view.get("jobs") or 0))}

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL or self.state == "vanished"


@dataclass
class Accounting:
    outcomes: dict[str, JobOutcome] = field(default_factory=dict)
    finished_at: float | None = None
    timed_out: bool = False
    poll_errors: int = 0

    def counts(self) -> dict[str, Any]:
        def tally(service: str | None) -> dict[str, int]:
            items = [o for o in self.outcomes.values() if service is None or o.service == service]
            completed = sum(o.state == "completed" for o in items)
            failed = sum(o.state == "failed" for o in items)
            invalid = sum(o.state == "invalid" for o in items)
            return {
                "submitted": len(items),
                "completed": completed,
                "failed": failed,
                "invalid": invalid,
                "lost": len(items) - completed - failed - invalid,
            }

        services = sorted({o.service for o in self.outcomes.values()})
        return {**tally(None), "by_service": {s: tally(s) for s in services}}

    def failed(self) -> list[dict[str, Any]]:
        return [
            {
                "id": o.job_id,
                "service": o.service,
                "reason": o.error or "failed without an error message",
                "attempts": o.attempts,
            }
            for o in self.outcomes.values()
            if o.state == "failed"
        ]

    def invalid(self) -> list[dict[str, Any]]:
        return [
            {"id": o.job_id, "service": o.service, "reason": o.error or "invalid result"}
            for o in self.outcomes.values()
            if o.state == "invalid"
        ]

    def retries(self) -> dict[str, Any]:
        """Runs per finished job as BullMQ counts them (``attemptsMade``: one per completed or failed run).
        A run lost to a killed worker (a stall) is counted by BullMQ apart and is not in this number."""
        finished = [o for o in self.outcomes.values() if o.state in TERMINAL and o.attempts is not None]
        by_attempts: dict[str, int] = {}
        for o in finished:
            by_attempts[str(o.attempts)] = by_attempts.get(str(o.attempts), 0) + 1
        retried = sorted((o for o in finished if (o.attempts or 0) > 1), key=lambda o: -(o.attempts or 0))
        return {
            "jobs_retried": len(retried),
            "retries": sum((o.attempts or 1) - 1 for o in retried),
            "jobs_by_attempts": dict(sorted(by_attempts.items(), key=lambda kv: int(kv[0]))),
            "retried_jobs": [
                {"id": o.job_id, "service": o.service, "attempts": o.attempts, "state": o.state} for o in retried
            ],
        }

    def lost(self) -> list[dict[str, Any]]:
        return [
            {
                "id": o.job_id,
                "service": o.service,
                "reason": "the gateway no longer knows this job (404)"
                if o.state == "vanished"
                else f"still {o.state!r} when the drain deadline passed",
            }
            for o in self.outcomes.values()
            if o.state not in TERMINAL
        ]


class JobPoller:
    def __init__(
        self, gateway_url: str, api_key: str, max_rps: float = 12.0, client: httpx.Client | None = None
    ) -> None:
        self.http = client or httpx.Client(
            base_url=gateway_url.rstrip("/"), timeout=10.0, headers={"X-API-Key": api_key}
        )
        self.min_gap = 1.0 / max_rps
        self._last = 0.0

    def _get(self, job_id: str) -> httpx.Response:
        while True:
            gap = self._last + self.min_gap - time.monotonic()
            if gap > 0:
                time.sleep(gap)
            self._last = time.monotonic()
            resp = self.http.get(f"/v1/jobs/{job_id}")
            if resp.status_code != 429:
                return resp
            time.sleep(float(resp.headers.get("Retry-After", "1")))

    def poll_one(self, outcome: JobOutcome) -> None:
        outcome.polls += 1
        resp = self._get(outcome.job_id)
        if resp.status_code == 404:
            outcome.state = "vanished"
            outcome.error = resp.json().get("error", {}).get("message") if resp.content else None
            return
        resp.raise_for_status()
        body = resp.json()
        outcome.state = body.get("status", "unknown")
        outcome.attempts = body.get("attempts_made")
        timings = body.get("timings") or {}
        outcome.total_s = timings.get("total_s")
        outcome.queue_wait_s = timings.get("queue_wait_s")
        outcome.processing_s = timings.get("processing_s")
        finished_ms = timings.get("finished_at_ms")
        outcome.finished_at = None if not isinstance(finished_ms, int | float) else finished_ms / 1000
        result = body.get("result")
        run = result.get("timings") if isinstance(result, dict) else None
        outcome.worker = run.get("worker") if isinstance(run, dict) else None
        if body.get("stages") is not None:
            outcome.stages = body["stages"]
            seconds = result.get("source_seconds") if isinstance(result, dict) else None
            outcome.media_seconds = float(seconds) if isinstance(seconds, int | float) else None
        if outcome.state == "failed":
            outcome.error = body.get("error")
        elif outcome.state == "completed":
            problem = result_problem(outcome.service, body)
            if problem:
                outcome.state, outcome.error = "invalid", problem

    def drain(
        self,
        jobs: list[Submission],
        deadline_s: float,
        round_pause_s: float = 2.0,
        on_round: Callable[[Accounting], None] | None = None,
    ) -> Accounting:
        acc = Accounting({j.job_id: JobOutcome(j.job_id, j.service, j.t) for j in jobs if j.job_id})
        deadline = time.monotonic() + deadline_s
        while True:
            last_round = time.monotonic() >= deadline
            # Within a queue jobs start in submission order: once one is still waiting, the later ones of that
            # service are too, so a round skips them (the last round checks every job).
            blocked: set[str] = set()
            pending = sorted((o for o in acc.outcomes.values() if not o.finished), key=lambda o: o.submitted_at)
            for outcome in pending:
                if outcome.service in blocked and not last_round:
                    continue
                try:
                    self.poll_one(outcome)
                except (httpx.HTTPError, ValueError):
                    acc.poll_errors += 1
                    continue
                if outcome.state in ("waiting", "prioritized", "wait"):
                    blocked.add(outcome.service)
            if on_round:
                on_round(acc)
            if all(o.finished for o in acc.outcomes.values()):
                break
            if last_round:
                acc.timed_out = True
                break
            time.sleep(min(round_pause_s, max(0.0, deadline - time.monotonic())))
        acc.finished_at = time.time()
        return acc
