"""Shared bits of the worker benchmarks: machine description, markdown tables, replacing doc blocks."""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "performance.md"
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> str:
    return f"{os.cpu_count()} CPU cores, {cpu_model()}, Python {platform.python_version()}"


def table(headers: list[str], rows: list[list[object]]) -> str:
    def cell(value: object) -> str:
        return f"{value:.3g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


SECTION = "## Workers"


def _insert_in_section(text: str, block: str) -> str:
    """Put a new block at the end of the "## Workers" section, leaving other sections alone."""
    if SECTION not in text.splitlines():
        return text.rstrip("\n") + f"\n\n{SECTION}\n\n{block}\n"
    lines = text.splitlines()
    start = lines.index(SECTION)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    return "\n".join([*lines[:end], "", block, "", *lines[end:]]).rstrip("\n") + "\n"


def record(name: str, command: str, body: str, doc: Path = DOC) -> None:
    """Replace the block between <!-- bench:NAME --> markers in the doc (append it if missing)."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    block = (f"<!-- bench:{name} -->\n`{command}` on {machine()}, {stamp}:\n\n{body}\n<!-- /bench:{name} -->")
    text = doc.read_text(encoding="utf-8") if doc.exists() else ""
    pattern = re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else _insert_in_section(text, block)
    doc.write_text(text, encoding="utf-8")
    print(f"recorded in {doc} ({name})")
