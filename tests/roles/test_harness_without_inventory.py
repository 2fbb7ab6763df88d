"""roles/harness loads in a play that has no inventory of this project, as molecule scenarios of the cluster roles
(gpu_operator, cluster_addons) include it: its argument check templates every default, and a derived fact that
needs an inventory variable must not fail it (CI at 1d26ff7: harness_endpoints without harness_namespace stopped
molecule's gpu_operator scenario at the check)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_role_loads_with_only_a_platform_set(tmp_path):
    play = [{"hosts": "localhost", "connection": "local", "gather_facts": False,
             "vars": {"harness_platform": "gke"}, "roles": [{"role": "harness"}],
             "tasks": [{"ansible.builtin.debug": {"var": "harness_endpoints.gateway"}}]}]
    playbook = tmp_path / "play.yml"
    playbook.write_text(json.dumps(play))
    env = {**os.environ, "ANSIBLE_ROLES_PATH": str(REPO / "roles"), "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}
    run = subprocess.run([str(Path(sys.executable).with_name("ansible-playbook")), "-i", "localhost,", str(playbook)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    # No namespace known: an empty one, which the relay and the doctor refuse naming the reference.
    assert '"harness_endpoints.gateway": "service:/gateway:http"' in run.stdout, run.stdout[-2000:]
