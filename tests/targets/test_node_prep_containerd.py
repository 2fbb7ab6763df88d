"""node_prep leaves the containerd config alone once it wrote it: the GPU Operator's container toolkit edits that file
(its nvidia runtime), and a second run must keep the edit and report changed=0. Runs the role's containerd tasks
against a config path in a temporary directory on this machine, with a stand-in `containerd` for the template's
`config dump` validation (it parses the TOML), so nothing outside the temporary directory is touched.
"""

import os
import stat
import sys

from conftest import REPO, ansible_playbook, clean_env

PLAY = """
- name: node_prep's containerd config
  hosts: controller
  gather_facts: false
  tasks:
    - name: Configure containerd
      ansible.builtin.include_role:
        name: node_prep
        tasks_from: containerd.yml
"""
# What the toolkit adds to the config it finds (nvidia-ctk runtime configure): runtimes with its own binary paths.
TOOLKIT_EDIT = """
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia-cdi]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia-cdi.options]
  BinaryName = "/usr/local/nvidia/toolkit/nvidia-container-runtime.cdi"
"""


def _run(tmp_path, config, playbook, *extra):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    stub = bin_dir / "containerd"
    stub.write_text(f"#!{sys.executable}\n"
                    "import sys, tomllib\n"
                    "tomllib.load(open(sys.argv[sys.argv.index('--config') + 1], 'rb'))\n")
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    env = clean_env(tmp_path)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    return ansible_playbook("-i", "inventories/self_managed", str(playbook),
                            "-e", f"node_prep_containerd_config={config}", "-e", "node_prep_restart_services=false",
                            *extra, env=env)


def test_second_run_keeps_the_toolkits_edit_and_changes_nothing(tmp_path):
    playbook = REPO / "tests" / "targets" / f".node-prep-containerd-{os.getpid()}.yml"
    playbook.write_text(PLAY)
    config = tmp_path / "etc" / "containerd" / "config.toml"
    try:
        first = _run(tmp_path, config, playbook)
        assert first.returncode == 0, first.stdout[-3000:]
        assert "SystemdCgroup = true" in config.read_text()
        config.write_text(config.read_text() + TOOLKIT_EDIT)  # the toolkit's edit
        second = _run(tmp_path, config, playbook)
        assert second.returncode == 0, second.stdout[-3000:]
        assert "changed=0" in second.stdout, second.stdout[-3000:]
        assert "runtimes.nvidia-cdi" in config.read_text(), "the toolkit's runtime was overwritten"
        assert 'runtimes.nvidia]' in config.read_text()
        # The rewrite switch writes the template again, on purpose.
        third = _run(tmp_path, config, playbook, "-e", "node_prep_containerd_config_rewrite=true")
        assert third.returncode == 0 and "runtimes.nvidia-cdi" not in config.read_text(), third.stdout[-3000:]
    finally:
        playbook.unlink()


def test_a_config_without_the_nvidia_runtime_is_named(tmp_path):
    playbook = REPO / "tests" / "targets" / f".node-prep-containerd-{os.getpid()}.yml"
    playbook.write_text(PLAY)
    config = tmp_path / "etc" / "containerd" / "config.toml"
    try:
        assert _run(tmp_path, config, playbook).returncode == 0
        config.write_text('version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]\n'
                          "  SystemdCgroup = true\n")  # an edit that dropped the nvidia runtime
        r = _run(tmp_path, config, playbook)
    finally:
        playbook.unlink()
    out = " ".join(r.stdout.split())
    assert r.returncode != 0, out[-3000:]
    assert f"{config} on localhost lacks SystemdCgroup = true or an nvidia runtime" in out, out[-3000:]
