"""Every role documents its options: meta/argument_specs.yml covers every variable in defaults/main.yml,
and a README says what the role changes (the prometheus-community habit of keeping the two in step)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROLES = sorted(p for p in (Path(__file__).resolve().parents[1] / "roles").iterdir() if p.is_dir())


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_role_has_readme_and_specs_covering_defaults(role: Path):
    assert (role / "README.md").is_file(), f"{role.name} has no README.md"
    specs = yaml.safe_load((role / "meta/argument_specs.yml").read_text())["argument_specs"]
    documented = {name for entry in specs.values() for name in (entry.get("options") or {})}
    defaults_file = role / "defaults/main.yml"
    defaults = yaml.safe_load(defaults_file.read_text()) or {} if defaults_file.exists() else {}
    missing = sorted(set(defaults) - documented)
    assert not missing, f"{role.name}: defaults not in meta/argument_specs.yml: {missing}"
    for entry in specs.values():
        for name, opt in (entry.get("options") or {}).items():
            assert opt.get("description"), f"{role.name}: option {name} has no description"
