"""Shared setup for the exporter tests: the repository root on sys.path (the pytest config has no
``pythonpath`` yet) and fresh Prometheus registries."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture
def repo_root() -> Path:
    return ROOT
