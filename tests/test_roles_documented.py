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


def _flatten(tasks: list[dict]) -> list[dict]:
    """Tasks with the contents of their block/rescue/always sections."""
    out = []
    for t in tasks:
        out.append(t)
        for section in ("block", "rescue", "always"):
            out += _flatten(t.get(section) or [])
    return out


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_role_has_a_molecule_scenario_with_idempotence_and_a_real_verify(role: Path):
    """STYLE: every role has a molecule scenario whose verify checks real state, and none drops idempotence."""
    scenario = role.parents[1] / "molecule" / role.name
    assert (scenario / "molecule.yml").is_file(), f"role {role.name} has no molecule scenario ({scenario})"
    base = yaml.safe_load((role.parents[1] / ".config/molecule/config.yml").read_text())
    own = yaml.safe_load((scenario / "molecule.yml").read_text()) or {}
    sequence = (own.get("scenario") or {}).get("test_sequence") or base["scenario"]["test_sequence"]
    assert {"converge", "idempotence", "verify"} <= set(sequence), f"{role.name}: test_sequence {sequence}"
    verify = yaml.safe_load((scenario / "verify.yml").read_text())
    tasks = [t for play in verify for t in play.get("tasks", [])]
    # Task files the verify includes (molecule/<scenario>/tasks/*.yml).
    tasks += [t for f in sorted((scenario / "tasks").glob("*.yml")) for t in yaml.safe_load(f.read_text()) or []]
    # Shared task files it includes (molecule/shared/tasks/pytest.yml runs the scenario's own tests/).
    for t in list(_flatten(tasks)):
        included = t.get("ansible.builtin.include_tasks")
        if isinstance(included, str) and "{{" not in included:
            tasks += yaml.safe_load((scenario / included).read_text()) or []
            if included.endswith("shared/tasks/pytest.yml"):
                tests = sorted((scenario / "tests").glob("test_*.py"))
                assert tests and all("\ndef test_" in f.read_text() for f in tests), (
                    f"{role.name}: verify runs {scenario / 'tests'}, which holds no test functions")
    tasks = _flatten(tasks)
    checks = [t for t in tasks if "ansible.builtin.assert" in t or "failed_when" in t or "until" in t]
    assert checks, f"{role.name}: verify.yml checks nothing"
    for t in tasks:
        that = (t.get("ansible.builtin.assert") or {}).get("that")
        assert that not in (True, "true", [True], ["true"]), f"{role.name}: task {t.get('name')!r} asserts nothing"
