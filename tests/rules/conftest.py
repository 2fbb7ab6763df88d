"""Render the alert-rule and cost-exporter templates with Ansible itself (the ``template`` module, the
roles' defaults and the local inventory), once per session, for both timing profiles.

Variable precedence mirrors a real run: role defaults < inventory group_vars < task vars (the profile).
The prometheus_stack role's defaults are used when they define the service-alert variables; until the
role has them, the proposed defaults in ``prometheus_stack_alert_defaults.yml`` stand in.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
TEMPLATES = {
    "cost-alerts.rules.yml": ROOT / "roles/cost_tracking/templates/cost-alerts.rules.yml.j2",
    "service-alerts.rules.yml": ROOT / "roles/prometheus_stack/templates/service-alerts.rules.yml.j2",
    "cost-exporter.yml": ROOT / "roles/cost_tracking/templates/cost-exporter.yml.j2",
}
PROFILES = ("standard", "fast")
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
if str(ROOT) not in sys.path:  # the pytest config has no pythonpath yet
    sys.path.insert(0, str(ROOT))


def _prometheus_stack_defaults() -> Path:
    role_defaults = ROOT / "roles/prometheus_stack/defaults/main.yml"
    if role_defaults.exists():
        data = yaml.safe_load(role_defaults.read_text()) or {}
        if "prometheus_stack_alert_profiles" in data:
            return role_defaults
    return HERE / "prometheus_stack_alert_defaults.yml"


def _bin(name: str) -> str:
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else name


@dataclass(frozen=True)
class Rendered:
    dir: Path

    def path(self, profile: str, name: str) -> Path:
        return self.dir / profile / name

    def load(self, profile: str, name: str):
        return yaml.safe_load(self.path(profile, name).read_text())


@pytest.fixture(scope="session")
def rendered(tmp_path_factory) -> Rendered:
    out = tmp_path_factory.mktemp("rendered")
    vars_files = [
        ROOT / "roles/harness/defaults/main.yml",
        ROOT / "roles/cost_tracking/defaults/main.yml",
        _prometheus_stack_defaults(),
        *sorted((ROOT / "inventories/local/group_vars/all").glob("*.yml")),
    ]
    tasks = []
    for profile in PROFILES:
        (out / profile).mkdir()
        for name, src in TEMPLATES.items():
            tasks.append(
                {
                    "name": f"Render {name} ({profile})",
                    "ansible.builtin.template": {
                        "src": str(src),
                        "dest": str(out / profile / name),
                        "mode": "0644",
                    },
                    "vars": {"harness_profile": profile},
                }
            )
    playbook = [
        {
            "name": "Render the rule and exporter templates",
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": False,
            "vars_files": [str(p) for p in vars_files],
            "tasks": tasks,
        }
    ]
    (out / "render.yml").write_text(yaml.safe_dump(playbook, sort_keys=False))
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    proc = subprocess.run(
        [
            _bin("ansible-playbook"),
            "-i",
            "localhost,",
            "-e",
            f"ansible_python_interpreter={sys.executable}",
            str(out / "render.yml"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return Rendered(out)


@pytest.fixture(scope="session")
def promtool():
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120)

    return run
