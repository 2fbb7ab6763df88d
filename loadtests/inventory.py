"""The shared facts of an inventory as Ansible sees them, for the programs that run beside the playbooks.

One source: roles/harness/defaults/main.yml (the service table, the profile clock, the metric names;
role defaults, the lowest precedence), then the inventory's ``group_vars/all/*.yml`` in name order, each
top-level key replacing the one before (Ansible's default ``hash_behaviour: replace``). Values that are Jinja
expressions stay strings: only the plain values of the table and the clock are read here.

Values that are Jinja expressions (derived facts, such as where the stack's services are reached) are asked of
Ansible itself with ``ansible_value``: the inventory, its group_vars and the role defaults, evaluated as a play
would.

The filters roles/harness renders with (the HPA behavior from a table entry) are loaded from the same
file Ansible loads, so Python computes with the code that rendered the objects.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
DEFAULT_INVENTORY = REPO / "inventories" / "local"
DEFAULTS_ROLE = REPO / "roles" / "harness"
ROLE_DEFAULTS = DEFAULTS_ROLE / "defaults" / "main.yml"


def _yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a mapping of variables is required, got {type(data).__name__}")
    return data


def role_defaults(role: str) -> dict[str, Any]:
    """A role's defaults/main.yml (empty when it has none)."""
    path = REPO / "roles" / role / "defaults" / "main.yml"
    return _yaml(path) if path.exists() else {}


def facts(inventory: Path | str = DEFAULT_INVENTORY) -> dict[str, Any]:
    """roles/harness's defaults overridden by the inventory's group_vars/all."""
    inventory = Path(inventory)
    merged = dict(_yaml(ROLE_DEFAULTS))
    group_vars = inventory / "group_vars" / "all"
    if not group_vars.is_dir():
        raise FileNotFoundError(f"{inventory}: no group_vars/all directory (is it an inventory of this project?)")
    for path in sorted(group_vars.glob("*.yml")):
        merged.update(_yaml(path))
    return merged


def services(inventory: Path | str = DEFAULT_INVENTORY, enabled_only: bool = True) -> list[dict[str, Any]]:
    """The service table's entries (the enabled ones unless asked otherwise)."""
    table = facts(inventory).get("harness_services") or []
    return [s for s in table if s.get("enabled", True) is True or not enabled_only]


def timing(inventory: Path | str = DEFAULT_INVENTORY) -> tuple[str, dict[str, Any]]:
    """The profile name and its clock (harness_profiles[harness_profile])."""
    f = facts(inventory)
    profile = str(f.get("harness_profile", "standard"))
    profiles = f.get("harness_profiles") or {}
    if profile not in profiles:
        raise KeyError(f"{inventory}: harness_profile={profile!r}; harness_profiles has {sorted(profiles)}")
    return profile, dict(profiles[profile])


@cache
def filters() -> ModuleType:
    """roles/harness/filter_plugins/harness.py, the module Ansible loads as a filter plugin."""
    path = DEFAULTS_ROLE / "filter_plugins" / "harness.py"
    spec = importlib.util.spec_from_file_location("harness_filters", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ansible_value(expr: str, inventory: Path | str = DEFAULT_INVENTORY, *extra: str, timeout: float = 120) -> Any:
    """The value of a Jinja expression as a play on the inventory's controller sees it, with roles/harness's
    defaults (a one-task play that loads the role, as every playbook does); ``extra`` is more ansible-playbook
    arguments (``-e name=value``). Fails naming the expression and Ansible's message when it cannot be evaluated."""
    env = {**os.environ, "ANSIBLE_STDOUT_CALLBACK": "json", "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
           "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1", "ANSIBLE_ROLES_PATH": str(REPO / "roles")}
    play = [{"name": "value", "hosts": "controller", "gather_facts": False, "roles": [{"role": "harness"}],
             "tasks": [{"ansible.builtin.debug": {"msg": "{{ " + expr + " }}"}}]}]
    with tempfile.TemporaryDirectory(prefix="harness-value-") as tmp:
        playbook = Path(tmp) / "value.yml"
        playbook.write_text(json.dumps(play))
        proc = subprocess.run(  # noqa: S603 (the venv's ansible-playbook on a play written here)
            [str(Path(sys.executable).with_name("ansible-playbook")), "-i", str(inventory), str(playbook), *extra],
            cwd=REPO, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    try:
        body, _ = json.JSONDecoder().raw_decode(proc.stdout[proc.stdout.index("{"):])
        result = body["plays"][0]["tasks"][-1]["hosts"]["localhost"]  # after the role's argument check
    except (ValueError, KeyError, IndexError) as exc:
        raise RuntimeError(f"ansible could not evaluate {expr!r} on {inventory} (exit {proc.returncode}): "
                           f"{proc.stderr.strip()[-2000:] or proc.stdout[-2000:]}") from exc
    if result.get("failed"):
        raise RuntimeError(f"ansible could not evaluate {expr!r} on {inventory}: {result.get('msg')}")
    return result["msg"]
