"""BullMQ's own record of every job, read from Redis after the drain: how many times each job was started,
stalled and finished, from the job hash (``ats`` attempts started, ``atm`` attempts made, ``stc`` stalls) and
the queue's event stream (one ``completed`` or ``failed`` entry per finish).

This is what "every job completed exactly once" is judged on: the gateway's view (``GET /v1/jobs/{id}``) says a
job is completed, BullMQ's event stream says how many times it was. A run lost to a killed worker is a stall
(``stc``) and a start (``ats``) without a finish; BullMQ counts it apart from ``attemptsMade``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

FINISH_EVENTS = ("completed", "failed")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _int(value: Any) -> int:
    try:
        return int(_text(value))
    except (TypeError, ValueError):
        return 0


def stream_ms(entry_id: Any) -> int:
    """A Redis stream entry id (``<ms>-<seq>``) as its milliseconds."""
    return int(_text(entry_id).split("-", 1)[0])


def read(
    redis: Any, prefix: str, queues: dict[str, str], job_ids: dict[str, str], since_ms: int, chunk: int = 2000
) -> dict[str, Any]:
    """Raw records: every event of each queue's stream since ``since_ms``, the first entry kept by the stream,
    and the job hash counters of every ledger job. ``job_ids``: job id -> service; ``queues``: service -> queue."""
    events: dict[str, list[tuple[str, dict[str, str]]]] = {}
    first_kept: dict[str, int | None] = {}
    max_deleted: dict[str, int | None] = {}
    for service, queue in queues.items():
        key = f"{prefix}:{queue}:events"
        head = redis.xrange(key, "-", "+", count=1)
        first_kept[service] = stream_ms(head[0][0]) if head else None
        # Redis 7 keeps the largest id it trimmed: past the run start, some of the run's events are gone.
        try:
            info = redis.xinfo_stream(key)
            deleted = info.get("max-deleted-entry-id") if isinstance(info, dict) else None
            max_deleted[service] = stream_ms(deleted) if deleted is not None else None
        except Exception:  # no stream yet (nothing happened) or an older Redis
            max_deleted[service] = None
        out: list[tuple[str, dict[str, str]]] = []
        start = f"{since_ms}-0"
        while True:
            batch = redis.xrange(key, start, "+", count=chunk)
            for entry_id, fields in batch:
                out.append((_text(entry_id), {_text(k): _text(v) for k, v in fields.items()}))
            if len(batch) < chunk:
                break
            last = _text(batch[-1][0])
            ms, seq = last.split("-")
            start = f"{ms}-{int(seq) + 1}"
        events[service] = out
    pipe = redis.pipeline()
    ordered = sorted(job_ids)
    for job_id in ordered:
        pipe.hmget(f"{prefix}:{queues[job_ids[job_id]]}:{job_id}", "ats", "atm", "stc", "finishedOn")
    hashes = {}
    for job_id, values in zip(ordered, pipe.execute(), strict=True):
        ats, atm, stc, finished = values
        hashes[job_id] = (
            None
            if ats is None and atm is None and finished is None
            else {"ats": _int(ats), "atm": _int(atm), "stc": _int(stc), "finishedOn": _int(finished) or None}
        )
    return {
        "since_ms": since_ms,
        "first_kept_ms": first_kept,
        "max_deleted_ms": max_deleted,
        "events": events,
        "hashes": hashes,
    }


def audit(raw: dict[str, Any], job_ids: dict[str, str]) -> dict[str, Any]:
    """Per job: finishes in the event stream, starts and stalls; and what breaks "exactly once"."""
    finishes: dict[str, list[str]] = {}
    starts: dict[str, int] = {}
    stalls: dict[str, int] = {}
    added: set[str] = set()
    for _service, entries in raw.get("events", {}).items():
        for _entry_id, fields in entries:
            job, event = fields.get("jobId"), fields.get("event")
            if not job:
                continue
            if event in FINISH_EVENTS:
                finishes.setdefault(job, []).append(event)
            elif event == "active":
                starts[job] = starts.get(job, 0) + 1
            elif event == "stalled":
                stalls[job] = stalls.get(job, 0) + 1
            elif event == "added":
                added.add(job)
    trimmed = [
        svc
        for svc, gone in (raw.get("max_deleted_ms") or {}).items()
        if gone is not None and gone >= raw.get("since_ms", 0)
    ]
    per_job: dict[str, dict[str, Any]] = {}
    never, twice = [], []
    for job_id in sorted(job_ids):
        h = (raw.get("hashes") or {}).get(job_id)
        done = finishes.get(job_id, [])
        row = {
            "service": job_ids[job_id],
            "finishes": len(done),
            "completed": done.count("completed"),
            "runs": h["ats"] if h else starts.get(job_id, 0),
            "stalls": h["stc"] if h else stalls.get(job_id, 0),
            "attempts_made": h["atm"] if h else None,
        }
        per_job[job_id] = row
        if row["completed"] > 1 or row["finishes"] > 1:
            twice.append(job_id)
        elif row["completed"] != 1:
            never.append(job_id)
    unledgered = sorted(added - set(job_ids))
    runs: dict[str, int] = {}
    for row in per_job.values():
        runs[str(row["runs"])] = runs.get(str(row["runs"]), 0) + 1
    retried = sorted((j for j, r in per_job.items() if r["runs"] > 1), key=lambda j: -per_job[j]["runs"])
    return {
        "jobs": len(per_job),
        "completed_once": sum(1 for r in per_job.values() if r["completed"] == 1 and r["finishes"] == 1),
        "not_completed": never,
        "finished_more_than_once": twice,
        "events_trimmed": trimmed,
        "unledgered_added": unledgered,
        "jobs_by_runs": dict(sorted(runs.items(), key=lambda kv: int(kv[0]))),
        "jobs_retried": len(retried),
        "retries": sum(per_job[j]["runs"] - 1 for j in retried),
        "stalls": sum(r["stalls"] for r in per_job.values()),
        "retried_jobs": [{"id": j, **per_job[j]} for j in retried[:50]],
        "per_job": per_job,
    }


def summary_line(a: dict[str, Any]) -> str:
    return (
        f"BullMQ: {a['completed_once']} of {a['jobs']} jobs completed exactly once; "
        f"{len(a['not_completed'])} not completed, {len(a['finished_more_than_once'])} finished more than once; "
        f"runs per job {a['jobs_by_runs']} ({a['jobs_retried']} retried, {a['retries']} retries, "
        f"{a['stalls']} stalls)"
    )


def job_ids_from(outcomes: Iterable[Any]) -> dict[str, str]:
    return {o.job_id: o.service for o in outcomes}


class RedisQueues:
    """Live reads of BullMQ's lists for the reaction probe and the worker-kill fault (sync redis client)."""

    def __init__(self, url: str, prefix: str = "bull") -> None:
        import redis

        self.redis = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self.prefix = prefix

    def depth(self, queues: list[str]) -> dict[str, float]:
        """The queue exporter's depth: waiting + prioritized + paused + active + delayed."""
        pipe = self.redis.pipeline(transaction=False)
        for q in queues:
            k = f"{self.prefix}:{q}"
            pipe.llen(f"{k}:wait")
            pipe.zcard(f"{k}:prioritized")
            pipe.llen(f"{k}:paused")
            pipe.llen(f"{k}:active")
            pipe.zcard(f"{k}:delayed")
        values = pipe.execute()
        return {q: float(sum(values[i * 5 : i * 5 + 5])) for i, q in enumerate(queues)}

    def active(self, queue: str) -> int:
        return int(self.redis.llen(f"{self.prefix}:{queue}:active"))

    def persistence(self) -> str | None:
        """Why a restart would lose jobs (no AOF and no RDB save points), or None when persistence is on."""
        aof = self.redis.config_get("appendonly").get("appendonly")
        save = self.redis.config_get("save").get("save")
        if aof == "yes" or (save or "").strip():
            return None
        return f"Redis has appendonly={aof!r} and save={save!r}: a restart would lose the queues"
