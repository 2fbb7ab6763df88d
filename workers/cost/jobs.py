"""Completed jobs per second per service, from the Prometheus HTTP API.

Why Prometheus and not the workers' own endpoints: workers come and go with scaling, and a worker that
was scaled away takes its counter with it. ``rate()`` over Prometheus' stored series counts the jobs of
workers that are gone, and handles counter resets on restarts.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

JOBS_METRIC = "model_worker_jobs_total"
# Seconds of source media the dubbing orchestrator finished dubbing (workers/dubbing), for the cost per dubbed
# media minute of each stage service.
MEDIA_METRIC = "dubbing_media_seconds_total"


class PrometheusQueryError(RuntimeError):
    pass


def completed_jobs_query(window: str) -> str:
    return f'sum by (service) (rate({JOBS_METRIC}{{status="completed"}}[{window}]))'


def media_rate_query(window: str) -> str:
    return f"sum(rate({MEDIA_METRIC}[{window}]))"


def parse_vector(response: Mapping[str, Any], label: str | None = "service") -> dict[str, float]:
    """{label value: sample value} from an instant-vector query response (label None: an aggregate with no
    labels, keyed "")."""
    if response.get("status") != "success":
        raise PrometheusQueryError(f"query failed: {response.get('errorType')}: {response.get('error')}")
    data = response.get("data") or {}
    if data.get("resultType") != "vector":
        raise PrometheusQueryError(f"expected a vector result, got {data.get('resultType')!r}")
    out: dict[str, float] = {}
    for item in data.get("result", []):
        key = item.get("metric", {}).get(label) if label is not None else ""
        if key is None:
            continue
        out[key] = float(item["value"][1])
    return out


class PrometheusJobRates:
    def __init__(self, base_url: str, window: str, timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.window = window
        self.timeout = timeout

    def fetch(self) -> dict[str, float]:
        return parse_vector(self._query(completed_jobs_query(self.window)))

    def media_rate(self) -> float | None:
        """Dubbed media seconds per second over the window; None where no orchestrator reports (no series)."""
        result = parse_vector(self._query(media_rate_query(self.window)), label=None)
        return None if not result else next(iter(result.values()))

    def _query(self, expr: str) -> dict[str, Any]:
        query = urllib.parse.urlencode({"query": expr})
        url = f"{self.base_url}/api/v1/query?{query}"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as resp:  # noqa: S310 - URL validated at start
                body = json.loads(resp.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            # Prometheus answers 400/422 with a JSON error body that says what is wrong with the query.
            try:
                body = json.loads(exc.read().decode("utf-8"))
            except (ValueError, OSError):
                raise PrometheusQueryError(f"GET {url}: HTTP {exc.code}") from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise PrometheusQueryError(f"GET {url}: {exc}") from exc
        return body
