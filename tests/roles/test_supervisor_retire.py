"""The host programs of the retired host-process path, on a machine upgraded from it, on a real supervisord run by
the role itself.

Each service role retires the host programs it ran before (process_supervisor's retire.yml, called by each service
role's main.yml). Without that they kept running beside their pods: the old Redis, gateway and exporters bound to
their ports, the old adapter bound to the old cluster.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def play(state: Path, tasks: str, extra: str = "") -> subprocess.CompletedProcess:
    """Run ``tasks`` in a play that has the harness role's defaults, with ``state`` as the state directory."""
    path = state / "play.yml"
    path.write_text(textwrap.dedent(f"""
        - hosts: localhost
          connection: local
          gather_facts: false
          vars:
            harness_platform: local
            harness_state_dir: {state}
            harness_kubeconfig: {state}/kubeconfig
          roles: [harness]
          tasks:
        """) + textwrap.indent(textwrap.dedent(tasks), "    ") + extra)
    return subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", "-e",
                           f"ansible_python_interpreter={sys.executable}", str(path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def changed(run: subprocess.CompletedProcess) -> int:
    m = re.search(r"localhost\s+:\s+ok=\d+\s+changed=(\d+)", run.stdout)
    assert m, run.stdout[-3000:]
    return int(m.group(1))


def ctl(state: Path, *args: str) -> str:
    return subprocess.run([str(BIN / "supervisorctl"), "-c", str(state / "supervisor/supervisord.conf"), *args],
                          capture_output=True, text=True, timeout=60).stdout


PROGRAMS = """
- ansible.builtin.include_role: {name: process_supervisor}
- ansible.builtin.include_role: {name: process_supervisor, tasks_from: program.yml}
  vars:
    process_supervisor_program: {name: "{{ item }}", command: sleep 600}
  loop: [redis, gateway, keeper]
"""

RETIRE = """
- ansible.builtin.include_role: {name: process_supervisor, tasks_from: retire.yml}
  vars:
    process_supervisor_retire: [redis, gateway, never-defined]
"""


@pytest.fixture
def state(tmp_path):
    yield tmp_path
    play(tmp_path, "- ansible.builtin.include_role: {name: process_supervisor, tasks_from: teardown.yml}\n")


def test_retire_removes_the_named_programs_and_nothing_else(state):
    run = play(state, PROGRAMS)
    assert run.returncode == 0, run.stdout[-3000:]
    assert re.search(r"^redis\s+RUNNING", ctl(state, "status"), re.M)

    run = play(state, RETIRE)
    assert run.returncode == 0, run.stdout[-3000:]
    assert changed(run) > 0
    status = ctl(state, "status")
    assert re.search(r"^keeper\s+RUNNING", status, re.M), status
    assert not re.search(r"^(redis|gateway)\s", status, re.M), status
    assert sorted(p.name for p in (state / "supervisor/conf.d").iterdir()) == ["keeper.conf"]

    run = play(state, RETIRE)
    assert run.returncode == 0, run.stdout[-3000:]
    assert changed(run) == 0, "a second retire changed something"


def test_retire_with_supervisord_stopped_deletes_the_definitions(state):
    run = play(state, PROGRAMS)
    assert run.returncode == 0, run.stdout[-3000:]
    ctl(state, "shutdown")
    run = play(state, RETIRE)
    assert run.returncode == 0, run.stdout[-3000:]
    assert sorted(p.name for p in (state / "supervisor/conf.d").iterdir()) == ["keeper.conf"], \
        "a stopped supervisord would start the retired programs again at its next start"


def test_retire_on_a_machine_that_never_ran_them_changes_nothing(state):
    run = play(state, RETIRE)
    assert run.returncode == 0, run.stdout[-3000:]
    assert changed(run) == 0


# The host programs each service role defined on the retired host-process path (its tasks/local.yml, deleted), which
# a machine upgraded from it may still have in supervisord's conf.d.
HOST_PROGRAMS = {
    "queue": ["redis"],
    "cost_tracking": ["cost-exporter"],
    "prometheus_adapter": ["prometheus-adapter"],
    "prometheus_stack": ["kube-state-metrics", "prometheus", "alertmanager"],
    "model_services": ["gateway", "queue-exporter", "gpu-exporter", "pod-runner"],
}


def test_each_service_role_retires_every_host_program_it_defined():
    """Each role's main.yml retires its old host programs on the local target with a dynamic include of its own, not
    from an imported file: an imported file's `when` is inherited by the tasks of a role it includes, which evaluate
    it without the including role's dependencies in scope (found by tests/real_node's former cluster_path.yml, which
    included the roles as site.yml's playbooks run them: `harness_services_in_cluster is undefined`)."""
    for role, programs in HOST_PROGRAMS.items():
        main = yaml.safe_load((ROOT / f"roles/{role}/tasks/main.yml").read_text())
        includes = [t for t in main if (t.get("ansible.builtin.include_role") or {}).get("tasks_from") == "retire.yml"]
        retired = [n for t in includes for n in t["vars"]["process_supervisor_retire"]]
        assert sorted(retired) == sorted(programs), f"{role} retires {retired}, defined {programs} before"
        for t in includes:
            assert t["when"] == "harness_platform == 'local'", (role, t["when"])
    assert not list(ROOT.glob("roles/*/tasks/local.yml")), "a role has a host-process path again"
    others = [p.relative_to(ROOT) for p in ROOT.glob("roles/*/tasks/*.yml") if "retire.yml" in p.read_text()
              and p.parts[-3] in HOST_PROGRAMS and p.name != "main.yml"]
    assert not others, f"retire.yml included from an imported file: {others}"
