"""GKE: who installs the NVIDIA driver, per device-plugin mode, rendered from the gke inventory.

The expectations come from the providers' pages, not from the rendering:
- NVIDIA's GKE page for the GPU Operator
  (https://docs.nvidia.com/datacenter/cloud-native/gpu-operator/latest/google-gke.html, source
  NVIDIA/cloud-native-docs gpu-operator/google-gke.rst): two setups. "Using the Google Driver Installer" (COS or
  Ubuntu): node pools with `--node-labels=gke-no-default-nvidia-gpu-device-plugin=true` and
  `--accelerator ...,gpu-driver-version=disabled`, then Google's nvidia-driver-installer DaemonSet
  (cos/daemonset-preloaded.yaml; on Ubuntu a manifest from the ubuntu directory), then the chart with
  hostPaths.driverInstallDir and toolkit.installDir /home/kubernetes/bin/nvidia, cdi.enabled/default and
  driver.enabled=false. "Using NVIDIA Driver Manager": Ubuntu with containerd only, the label, the chart's own
  install (the operator's driver). New node pools: the label and gpu-driver-version=disabled.
- NVIDIA AI Cluster Runtime, GKE GPU setup (https://docs.nvidia.com/aicr/integrator-guide/gke-gpu-setup): with GKE's
  own device plugin, pools keep GKE's managed install (gpu-driver-version=default or latest) and no label, and the
  operator runs with devicePlugin.enabled=false and driver.enabled=false. The label forfeits GKE's managed install,
  which is finalized by the DaemonSet the label disables: "a labeled pool paired with the managed install comes up
  driverless - never combine the label with gpu-driver-version=default/latest".
- GoogleCloudPlatform/container-engine-accelerators nvidia-driver-installer/{cos,ubuntu}/daemonset-preloaded.yaml:
  kube-system DaemonSet nvidia-driver-installer, node affinity cloud.google.com/gke-accelerator Exists and
  cloud.google.com/gke-gpu-driver-version DoesNotExist.
"""

import json

import pytest
from conftest import REPO, ansible_playbook

LABEL = "gke-no-default-nvidia-gpu-device-plugin"
GKE_DRIVER_DIR = "/home/kubernetes/bin/nvidia"
INSTALLER_REPO = "https://raw.githubusercontent.com/GoogleCloudPlatform/container-engine-accelerators/"

MODES = {
    # The inventory as shipped: GKE's device plugin, GKE's driver.
    "gke": {},
    # Only the device plugin switched: the driver must follow (Google's installer, which COS can take).
    "operator-plugin": {"harness_gpu_device_plugin": "operator"},
    "google-installer-ubuntu": {"harness_gpu_device_plugin": "operator", "harness_gke_gpu_driver": "google_installer",
                                "harness_gke_image_type": "UBUNTU_CONTAINERD"},
    "operator-driver-ubuntu": {"harness_gpu_device_plugin": "operator", "harness_gke_gpu_driver": "operator",
                               "harness_gke_image_type": "UBUNTU_CONTAINERD"},
}


@pytest.fixture(scope="module")
def modes(tmp_path_factory):
    out = {}
    for mode, extra in MODES.items():
        d = tmp_path_factory.mktemp(f"gke-{mode}")
        args = ["-e", json.dumps(extra)] if extra else []
        r = ansible_playbook("-i", "inventories/gke", "tests/targets/render.yml", "-e", f"render_out={d}", *args)
        assert r.returncode == 0, f"rendering gke {mode} failed:\n{r.stdout[-4000:]}\n{r.stderr[-2000:]}"
        out[mode] = json.loads((d / "controller.json").read_text())
    return out


def gpu_pools(r):
    return [b for b in r["gke_node_pools"] if b["config"].get("accelerators")]


def driver_version(body):
    return body["config"]["accelerators"][0]["gpuDriverInstallationConfig"]["gpuDriverVersion"]


def test_gke_device_plugin_keeps_gkes_managed_driver_and_no_label(modes):
    r = modes["gke"]
    for body in gpu_pools(r):
        assert driver_version(body) in ("DEFAULT", "LATEST"), body["name"]
        assert LABEL not in body["config"]["labels"], body["name"]
    values = r["gpu_operator_values"]
    assert values["driver"]["enabled"] is False and values["devicePlugin"]["enabled"] is False
    assert values["hostPaths"]["driverInstallDir"] == GKE_DRIVER_DIR
    assert r["gpu_operator_gke_driver_installer"] == "", "GKE's managed install: no second installer"


@pytest.mark.parametrize("mode", ["operator-plugin", "google-installer-ubuntu", "operator-driver-ubuntu"])
def test_operator_device_plugin_pools_disable_gkes_driver_install(modes, mode):
    # The label stops GKE's device plugin and with it GKE's managed install: the pools must say disabled, and
    # someone else (Google's installer or the operator) installs the driver.
    for body in gpu_pools(modes[mode]):
        assert body["config"]["labels"][LABEL] == "true", body["name"]
        assert driver_version(body) == "INSTALLATION_DISABLED", (mode, body["name"])
        assert "gpuSharingConfig" not in body["config"]["accelerators"][0], "the operator's plugin time-slices"
    assert modes[mode]["gpu_operator_values"]["devicePlugin"]["enabled"] is True


@pytest.mark.parametrize(("mode", "image", "manifest"), [
    ("operator-plugin", "COS_CONTAINERD", "nvidia-driver-installer/cos/daemonset-preloaded.yaml"),
    ("google-installer-ubuntu", "UBUNTU_CONTAINERD", "nvidia-driver-installer/ubuntu/daemonset-preloaded.yaml"),
])
def test_google_installer_applies_googles_daemonset_and_host_driver_paths(modes, mode, image, manifest):
    r = modes[mode]
    assert {b["config"]["imageType"] for b in r["gke_node_pools"]} == {image}
    url = r["gpu_operator_gke_driver_installer"]
    assert url.startswith(INSTALLER_REPO) and url.endswith(manifest), url
    assert "/master/" not in url, "pinned to a commit, not the moving branch"
    values = r["gpu_operator_values"]
    assert values["driver"]["enabled"] is False
    assert values["hostPaths"]["driverInstallDir"] == GKE_DRIVER_DIR
    assert values["toolkit"]["installDir"] == GKE_DRIVER_DIR
    assert values["cdi"] == {"enabled": True, "default": True}


def test_operator_driver_on_ubuntu_uses_the_charts_own_driver_install(modes):
    r = modes["operator-driver-ubuntu"]
    assert {b["config"]["imageType"] for b in r["gke_node_pools"]} == {"UBUNTU_CONTAINERD"}
    values = r["gpu_operator_values"]
    assert values["driver"]["enabled"] is True
    # Google's installer directory would point the operator's validator at a driver nobody put there.
    assert values.get("hostPaths", {}).get("driverInstallDir") != GKE_DRIVER_DIR
    assert values["toolkit"].get("installDir") != GKE_DRIVER_DIR
    assert r["gpu_operator_gke_driver_installer"] == "", "one driver per node"
    # NVIDIA's GKE page, prerequisites (both setups): the toolkit on GKE 1.33+ needs RUNTIME_CONFIG_SOURCE=file.
    assert {"name": "RUNTIME_CONFIG_SOURCE", "value": "file"} in values["toolkit"]["env"]


DIFF_PLAY = """
- hosts: controller
  gather_facts: false
  tasks:
    - name: The bodies of the setup the pools were made for
      ansible.builtin.include_role: {name: gke_cluster, tasks_from: render.yml, public: true}
      vars: {gke_cluster_device_plugin: gke}
    - ansible.builtin.set_fact: {__made: "{{ __gke_cluster_node_pool_bodies }}"}
    - name: The bodies of the setup the inventory now asks for
      ansible.builtin.include_role: {name: gke_cluster, tasks_from: render.yml, public: true}
      vars: {gke_cluster_device_plugin: operator}
    - name: Compare each described (made) pool with the wanted body, as tasks/node_pool.yml does
      ansible.builtin.copy:
        dest: "{{ out }}"
        mode: "0644"
        content: "{{ _diffs | to_json }}"
      vars:
        _diffs: >-
          {% set d = {} %}{% for made in __made %}{% set _ = d.update({made.name: lookup('ansible.builtin.template',
          repo ~ '/roles/gke_cluster/templates/node_pool_diff.yml.j2', template_vars={'__gke_cluster_pool_now':
          {'json': made}, '_gke_cluster_body': (__gke_cluster_node_pool_bodies | selectattr('name', 'eq', made.name)
          | first)}) | from_yaml}) %}{% endfor %}{{ d }}
"""


def test_a_pool_made_for_another_setup_stops_the_run_naming_the_fields(tmp_path):
    # Re-running with harness_gpu_device_plugin switched must not keep a pool with GKE's driver and no label (two
    # device plugins, or Google's installer skipping the node): the describe-first reconciliation names the fields.

    play = tmp_path / "diff.yml"
    play.write_text(DIFF_PLAY)
    out = tmp_path / "diff.json"
    r = ansible_playbook("-i", "inventories/gke", str(play), "-e", f"out={out}", "-e", f"repo={REPO}")
    assert r.returncode == 0, r.stdout[-3000:]
    diffs = json.loads(out.read_text())
    assert set(diffs["gpu-l4"]["immutable"]) >= {"gpuDriverVersion", LABEL}, diffs["gpu-l4"]
    assert diffs["gpu-l4"]["immutable"]["gpuDriverVersion"] == "DEFAULT -> INSTALLATION_DISABLED"
    assert diffs["system"]["immutable"] == {}, "the CPU pool is the same in every setup"
