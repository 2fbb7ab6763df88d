"""Month-to-date spend and GPU-hours, accumulated between updates and persisted across restarts.

Each update bills the interval since the previous one at the rates seen at the previous update (the
rates that held during the interval). An interval longer than ``max_gap`` seconds (the exporter was
down, or the cluster unreadable) is billed only up to ``max_gap``: what ran while nobody watched is not
known, and the ledger under-counts rather than invents spend. Months are calendar months in UTC; an
interval that crosses a month boundary is split, and month-to-date starts again from the part after it.
GPU-hours are cumulative over the ledger's life (a monotonic total, so ``increase()`` works on it).

Two month-end figures, kept apart as cloud budgets keep actual spend and forecast apart:
- projection = month-to-date spend + the *current* rate x hours left in the month (an instant figure:
  on the 1st, one minute at 8 replicas projects as if the month stayed at 8 replicas);
- forecast = month-to-date spend + the rate *averaged over a window* (``forecast_window_seconds``) x hours
  left. A short burst moves the average by its share of the window only. Time inside the window that the
  ledger did not watch (before its first update, exporter downtime beyond ``max_gap``) counts at the
  oldest rate it saw in the window, so a freshly started exporter forecasts from what it sees, and a burst
  right after a start does not dominate either.
The rate history is kept in buckets of ``forecast_window_seconds / FORECAST_BUCKETS`` seconds (cost and
seconds watched per bucket), pruned past the window, and persisted with the rest.
The state file is written atomically (temporary file + rename).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

STATE_VERSION = 2
READABLE_VERSIONS = (1, 2)  # version 1 had no rate history: it is read as an empty history
FORECAST_BUCKETS = 96
DEFAULT_FORECAST_WINDOW_SECONDS = 86400.0
UTC = dt.UTC


def month_key(when: dt.datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m")


def month_start(when: dt.datetime) -> dt.datetime:
    w = when.astimezone(UTC)
    return dt.datetime(w.year, w.month, 1, tzinfo=UTC)


def next_month_start(when: dt.datetime) -> dt.datetime:
    w = when.astimezone(UTC)
    return dt.datetime(w.year + (w.month == 12), w.month % 12 + 1, 1, tzinfo=UTC)


def hours_left_in_month(when: dt.datetime) -> float:
    return (next_month_start(when) - when).total_seconds() / 3600.0


@dataclass(frozen=True)
class Rate:
    cost_per_hour: float
    gpus_by_type: Mapping[str, float] = field(default_factory=dict)


@dataclass
class ServiceLedger:
    month_to_date: float = 0.0
    gpu_hours: dict[str, float] = field(default_factory=dict)
    # Rate history for the forecast: bucket start (s since the epoch) -> [seconds watched, cost billed].
    history: dict[float, list[float]] = field(default_factory=dict)


class StateFileError(ValueError):
    pass


@dataclass
class Ledger:
    month: str = ""
    last_update: dt.datetime | None = None
    services: dict[str, ServiceLedger] = field(default_factory=dict)
    last_rates: dict[str, Rate] = field(default_factory=dict)
    forecast_window_seconds: float = DEFAULT_FORECAST_WINDOW_SECONDS

    @property
    def _bucket_seconds(self) -> float:
        return self.forecast_window_seconds / FORECAST_BUCKETS

    def _bill(self, start: dt.datetime, end: dt.datetime, month_total: bool) -> None:
        hours = (end - start).total_seconds() / 3600.0
        for name, rate in self.last_rates.items():
            entry = self.services.setdefault(name, ServiceLedger())
            if month_total:
                entry.month_to_date += rate.cost_per_hour * hours
            for gpu_type, gpus in rate.gpus_by_type.items():
                entry.gpu_hours[gpu_type] = entry.gpu_hours.get(gpu_type, 0.0) + gpus * hours
            self._record(entry, start.timestamp(), end.timestamp(), rate.cost_per_hour)

    def _record(self, entry: ServiceLedger, t0: float, t1: float, cost_per_hour: float) -> None:
        """Spread the interval [t0, t1) over the history buckets it touches."""
        size = self._bucket_seconds
        t = t0
        while t < t1:
            bucket = (t // size) * size
            upto = min(t1, bucket + size)
            cell = entry.history.setdefault(bucket, [0.0, 0.0])
            cell[0] += upto - t
            cell[1] += cost_per_hour * (upto - t) / 3600.0
            t = upto

    def _prune(self, now: dt.datetime) -> None:
        oldest = now.timestamp() - self.forecast_window_seconds - self._bucket_seconds
        for entry in self.services.values():
            for bucket in [b for b in entry.history if b < oldest]:
                del entry.history[bucket]

    def advance(self, now: dt.datetime, rates: Mapping[str, Rate], max_gap_seconds: float) -> None:
        """Bill the time since the last update at the last rates, then remember ``rates``."""
        now = now.astimezone(UTC)
        if self.last_update is not None and now > self.last_update:
            start = max(self.last_update, now - dt.timedelta(seconds=max_gap_seconds))
            boundary = month_start(now)
            if start < boundary:
                # The part before the boundary counts for GPU-hours and the rate history only; the old
                # month is closed.
                self._bill(start, boundary, month_total=False)
                start = boundary
            if self.month != month_key(now):
                self._new_month(now)
            self._bill(start, now, month_total=True)
        elif self.month != month_key(now):
            self._new_month(now)
        self._prune(now)
        self.last_update = now
        self.last_rates = {k: Rate(v.cost_per_hour, dict(v.gpus_by_type)) for k, v in rates.items()}

    def _new_month(self, now: dt.datetime) -> None:
        self.month = month_key(now)
        for entry in self.services.values():
            entry.month_to_date = 0.0

    def month_to_date(self, service: str) -> float:
        entry = self.services.get(service)
        return entry.month_to_date if entry else 0.0

    def gpu_hours(self, service: str) -> dict[str, float]:
        entry = self.services.get(service)
        return dict(entry.gpu_hours) if entry else {}

    def projection(self, service: str, now: dt.datetime) -> float:
        rate = self.last_rates.get(service, Rate(0.0)).cost_per_hour
        return self.month_to_date(service) + rate * hours_left_in_month(now.astimezone(UTC))

    def average_rate(self, service: str, now: dt.datetime) -> float:
        """The service's cost per hour averaged over the forecast window ending at ``now``."""
        window = self.forecast_window_seconds
        hi = now.timestamp()
        lo = hi - window
        size = self._bucket_seconds
        entry = self.services.get(service)
        watched = cost = 0.0
        oldest: tuple[float, float] | None = None  # (bucket, rate per hour) of the oldest bucket in the window
        for bucket, (seconds, billed) in sorted((entry.history if entry else {}).items()):
            if bucket + size <= lo or bucket >= hi or seconds <= 0:
                continue
            # The bucket the window's start cuts (an old, complete one) counts pro rata; the others whole.
            share = 1.0 if bucket >= lo else (bucket + size - lo) / size
            watched += seconds * share
            cost += billed * share
            if oldest is None:
                oldest = (bucket, billed / seconds * 3600.0)
        current = self.last_rates.get(service, Rate(0.0)).cost_per_hour
        baseline = oldest[1] if oldest is not None else current
        unwatched = max(0.0, window - watched)
        return (cost + baseline * unwatched / 3600.0) / window * 3600.0

    def forecast(self, service: str, now: dt.datetime) -> float:
        """Month-to-date spend + the windowed average rate x hours left in the month."""
        return self.month_to_date(service) + self.average_rate(service, now) * hours_left_in_month(
            now.astimezone(UTC)
        )

    # persistence

    def to_json(self) -> dict:
        return {
            "version": STATE_VERSION,
            "month": self.month,
            "last_update": self.last_update.isoformat() if self.last_update else None,
            "services": {
                k: {
                    "month_to_date_usd": v.month_to_date,
                    "gpu_hours": v.gpu_hours,
                    "rate_history": [[b, sec, cost] for b, (sec, cost) in sorted(v.history.items())],
                }
                for k, v in self.services.items()
            },
            "last_rates": {
                k: {"cost_per_hour": v.cost_per_hour, "gpus_by_type": dict(v.gpus_by_type)}
                for k, v in self.last_rates.items()
            },
        }

    @classmethod
    def from_json(cls, data: Mapping) -> Ledger:
        if data.get("version") not in READABLE_VERSIONS:
            raise StateFileError(
                f"state version {data.get('version')!r}: this exporter reads versions "
                f"{', '.join(map(str, READABLE_VERSIONS))}"
            )
        try:
            last = data.get("last_update")
            return cls(
                month=str(data.get("month", "")),
                last_update=dt.datetime.fromisoformat(last) if last else None,
                services={
                    k: ServiceLedger(
                        float(v["month_to_date_usd"]),
                        {g: float(h) for g, h in v["gpu_hours"].items()},
                        {float(b): [float(sec), float(cost)] for b, sec, cost in v.get("rate_history", [])},
                    )
                    for k, v in data.get("services", {}).items()
                },
                last_rates={
                    k: Rate(float(v["cost_per_hour"]), {g: float(n) for g, n in v["gpus_by_type"].items()})
                    for k, v in data.get("last_rates", {}).items()
                },
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StateFileError(f"malformed state: {exc!r}") from exc

    @classmethod
    def load(cls, path: Path) -> Ledger:
        """The persisted ledger, or an empty one when the file does not exist yet."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls()
        try:
            return cls.from_json(json.loads(text))
        except (json.JSONDecodeError, StateFileError) as exc:
            raise StateFileError(
                f"state file {str(path)!r} is unreadable ({exc}); move it aside to start a new ledger"
            ) from exc

    def save(self, path: Path) -> None:
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(self.to_json(), fh, indent=1, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
