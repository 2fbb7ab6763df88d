"""Structured logs: one JSON object per line on stderr.

Every record carries the process role (service), and the pod and node names when the pod's environment
sets POD_NAME / NODE_NAME (the Deployments do), so logs from many workers on one node can be told apart.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, static_fields: dict[str, str]) -> None:
        super().__init__()
        self._static = {key: value for key, value in static_fields.items() if value}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **self._static,
        }
        # Fields passed with logger.info("...", extra={...}) become top-level keys.
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup_logging(role: str, level: str = "INFO", pod: str | None = None, node: str | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter({"role": role, "pod": pod or "", "node": node or ""}))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Per-request access lines from uvicorn duplicate gateway_requests_total; keep them at debug.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
