"""The run's ledger: one JSON line per submission and per load event, written by the Locust process and
read by the checker (live, by tailing, and at the end for the no-loss accounting).

Records (``kind``):
- ``send``: ``t``, ``service``, ``request_id``: written before a submission request goes out.
- ``submit``: ``t`` (wall clock), ``service``, ``ok``, ``status`` (HTTP status, 0 when no answer),
  ``latency_ms``, ``job_id`` (when accepted) or ``error``, and the ``request_id`` of its ``send``.
  A ``send`` without its ``submit`` is a request cut off (the load ended or Locust was stopped while it was in
  flight): the gateway may have accepted it, so the checker counts it against the gateway's own counter.
- ``load_start`` / ``load_stop``: ``t``; ``stage``: ``t``, ``name``, ``users``, ``spawn_rate``.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class LedgerWriter:
    """Appends records; safe to call from many Locust users at once (greenlets or threads)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._handle = path.open("a", encoding="utf-8")

    def write(self, kind: str, **fields: Any) -> None:
        line = json.dumps({"kind": kind, "t": round(time.time(), 3), **fields}, separators=(",", ":"))
        with self._lock:
            self._handle.write(line + "\n")
            self._handle.flush()

    def close(self) -> None:
        with self._lock:
            self._handle.close()


@dataclass
class Submission:
    t: float
    service: str
    ok: bool
    status: int
    latency_ms: float
    job_id: str | None = None
    error: str | None = None


@dataclass
class LedgerState:
    submissions: list[Submission] = field(default_factory=list)
    stages: list[dict[str, Any]] = field(default_factory=list)
    load_start: float | None = None
    load_stop: float | None = None
    bad_lines: int = 0
    bad_examples: list[str] = field(default_factory=list)
    sends: dict[str, tuple[float, str]] = field(default_factory=dict)  # request_id -> (t, service), until answered

    @property
    def jobs(self) -> list[Submission]:
        return [s for s in self.submissions if s.ok and s.job_id]

    def cut_off(self) -> list[dict[str, Any]]:
        """Requests that went out and never got an answer recorded."""
        pending = sorted(self.sends.items(), key=lambda item: item[1])
        return [{"request_id": k, "t": t, "service": svc} for k, (t, svc) in pending]

    def stage_at(self, t: float) -> dict[str, Any] | None:
        current = None
        for stage in self.stages:
            if stage["t"] <= t:
                current = stage
        if self.load_stop is not None and t >= self.load_stop:
            return None
        return current

    def apply(self, record: dict[str, Any]) -> None:
        kind = record.get("kind")
        if kind == "send":
            self.sends[str(record["request_id"])] = (float(record["t"]), str(record["service"]))
        elif kind == "submit":
            if record.get("request_id") is not None:
                self.sends.pop(str(record["request_id"]), None)
            self.submissions.append(
                Submission(
                    record["t"],
                    record["service"],
                    bool(record.get("ok")),
                    int(record.get("status", 0)),
                    float(record.get("latency_ms", 0.0)),
                    record.get("job_id"),
                    record.get("error"),
                )
            )
        elif kind == "stage":
            self.stages.append(record)
        elif kind == "load_start" and self.load_start is None:
            self.load_start = record["t"]
        elif kind == "load_stop":
            self.load_stop = record["t"]


class LedgerTail:
    """Reads what was appended since the last call; a half-written last line waits for the next call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.state = LedgerState()
        self._offset = 0
        self._lock = threading.Lock()

    def poll(self) -> LedgerState:
        with self._lock:
            try:
                with self.path.open("rb") as handle:
                    handle.seek(self._offset)
                    chunk = handle.read()
            except FileNotFoundError:
                return self.state
            complete = chunk[: chunk.rfind(b"\n") + 1]
            self._offset += len(complete)
            for line in complete.splitlines():
                try:
                    self.state.apply(json.loads(line))
                except (ValueError, KeyError, TypeError):
                    self.state.bad_lines += 1
                    if len(self.state.bad_examples) < 3:
                        self.state.bad_examples.append(line[:200].decode("utf-8", "replace"))
            return self.state


def read_ledger(path: Path) -> LedgerState:
    return LedgerTail(path).poll()
