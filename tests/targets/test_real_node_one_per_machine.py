"""A second real node is refused before anything changes: two kube-proxies in iptables mode in one network namespace
replace each other's KUBE-* chains on every sync, so both clusters' Services break by turns (seen with the local
inventory's node beside tests/real_node's). roles/real_node's preflight names the other kube-proxy and how to stop it.

The other node is a stand-in process whose command line is a kube-proxy's with another node's configuration file;
the node of the inventory under test (whose own kube-proxy may run, during the test command) is not "another"."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from conftest import REPO, ansible_playbook, clean_env

PLAY = [{"name": "the real node's preflight", "hosts": "controller", "gather_facts": False,
         "tasks": [{"ansible.builtin.include_role": {"name": "real_node", "tasks_from": "preflight.yml"}}]}]


def preflight(tmp_path: Path) -> subprocess.CompletedProcess:
    playbook = REPO / "tests" / "targets" / f".real-node-preflight-{tmp_path.name}.yml"
    playbook.write_text(yaml.safe_dump(PLAY, sort_keys=False))
    try:
        # The caller's HOME: the inventory's state directory is where its own node (if any) runs.
        env = clean_env(Path.home())
        env.pop("ANSIBLE_LOCAL_TEMP")
        return ansible_playbook("-i", "inventories/local", str(playbook), "-e", "local_real_node_enabled=true",
                                env=env, timeout=300)
    finally:
        playbook.unlink()


def test_a_second_real_node_is_refused_naming_the_other_kube_proxy(tmp_path):
    other = tmp_path / "other-node" / "kube-proxy-config.yaml"
    stand_in = subprocess.Popen(["bash", "-c", f'exec -a "kube-proxy --config={other}" sleep 300'])
    try:
        refused = preflight(tmp_path)
    finally:
        stand_in.kill()
        stand_in.wait()
    assert refused.returncode != 0, refused.stdout[-3000:]
    assert "another real node's kube-proxy runs on this machine" in refused.stdout, refused.stdout[-3000:]
    assert f"--config={other}" in refused.stdout, refused.stdout[-3000:]

    accepted = preflight(tmp_path)
    assert accepted.returncode == 0, accepted.stdout[-3000:]
