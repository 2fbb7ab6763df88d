"""`from conftest import ...` inside a function resolves at call time to whichever `conftest` module pytest loaded
last (tests/workers' in a whole run), not the test's own: it passed alone and failed in the test command twice.
Import helpers from conftest at module level only."""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def test_conftest_is_imported_at_module_level_only():
    late = [f"{p.relative_to(TESTS)}:{n}" for p in sorted(TESTS.rglob("*.py"))
            for n, line in enumerate(p.read_text().splitlines(), 1)
            if re.match(r"\s+(from conftest import|import conftest)\b", line)]
    assert not late, f"conftest imported inside a function: {late}"
