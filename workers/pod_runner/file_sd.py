"""Prometheus file_sd targets for the running workers, written atomically (temp file + rename)."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Target:
    port: int
    namespace: str
    pod: str
    node: str
    service: str


def render(targets: list[Target]) -> str:
    groups = [{"targets": [f"127.0.0.1:{t.port}"],
               "labels": {"namespace": t.namespace, "pod": t.pod, "node": t.node, "service": t.service}}
              for t in sorted(targets, key=lambda t: (t.namespace, t.pod))]
    return json.dumps(groups, indent=2) + "\n"


def write_atomic(path: Path, text: str) -> None:
    """Prometheus re-reads the file on change; it must never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class FileSdWriter:
    """Rewrites the file only when the target list changed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._last: str | None = None

    def write(self, targets: list[Target]) -> bool:
        text = render(targets)
        if text == self._last:
            return False
        write_atomic(self.path, text)
        self._last = text
        return True
