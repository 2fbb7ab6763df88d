"""Month-to-date spend and GPU-hours, accumulated between updates and persisted across restarts.

Each update bills the interval since the previous one at the rates seen at the previous update (the
rates that held during the interval). An interval longer than ``max_gap`` seconds (the exporter was
down, or the cluster unreadable) is billed only up to ``max_gap``: what ran while nobody watched is not
known, and the ledger under-counts rather than invents spend. Months are calendar months in UTC; an
interval that crosses a month boundary is split, and month-to-date starts again from the part after it.
GPU-hours are cumulative over the ledger's life (a monotonic total, so ``increase()`` works on it).

Monthly projection = month-to-date spend + current rate x hours left in the month.
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

STATE_VERSION = 1
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


class StateFileError(ValueError):
    pass


@dataclass
class Ledger:
    month: str = ""
    last_update: dt.datetime | None = None
    services: dict[str, ServiceLedger] = field(default_factory=dict)
    last_rates: dict[str, Rate] = field(default_factory=dict)

    def _bill(self, hours: float, month_total: bool) -> None:
        for name, rate in self.last_rates.items():
            entry = self.services.setdefault(name, ServiceLedger())
            if month_total:
                entry.month_to_date += rate.cost_per_hour * hours
            for gpu_type, gpus in rate.gpus_by_type.items():
                entry.gpu_hours[gpu_type] = entry.gpu_hours.get(gpu_type, 0.0) + gpus * hours

    def advance(self, now: dt.datetime, rates: Mapping[str, Rate], max_gap_seconds: float) -> None:
        """Bill the time since the last update at the last rates, then remember ``rates``."""
        now = now.astimezone(UTC)
        if self.last_update is not None and now > self.last_update:
            start = max(self.last_update, now - dt.timedelta(seconds=max_gap_seconds))
            boundary = month_start(now)
            if start < boundary:
                # The part before the boundary counts for GPU-hours only; the old month is closed.
                self._bill((boundary - start).total_seconds() / 3600.0, month_total=False)
                start = boundary
            if self.month != month_key(now):
                self._new_month(now)
            self._bill((now - start).total_seconds() / 3600.0, month_total=True)
        elif self.month != month_key(now):
            self._new_month(now)
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

    # persistence

    def to_json(self) -> dict:
        return {
            "version": STATE_VERSION,
            "month": self.month,
            "last_update": self.last_update.isoformat() if self.last_update else None,
            "services": {
                k: {"month_to_date_usd": v.month_to_date, "gpu_hours": v.gpu_hours}
                for k, v in self.services.items()
            },
            "last_rates": {
                k: {"cost_per_hour": v.cost_per_hour, "gpus_by_type": dict(v.gpus_by_type)}
                for k, v in self.last_rates.items()
            },
        }

    @classmethod
    def from_json(cls, data: Mapping) -> Ledger:
        if data.get("version") != STATE_VERSION:
            raise StateFileError(
                f"state version {data.get('version')!r}: this exporter reads version {STATE_VERSION}"
            )
        try:
            last = data.get("last_update")
            return cls(
                month=str(data.get("month", "")),
                last_update=dt.datetime.fromisoformat(last) if last else None,
                services={
                    k: ServiceLedger(
                        float(v["month_to_date_usd"]), {g: float(h) for g, h in v["gpu_hours"].items()}
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
