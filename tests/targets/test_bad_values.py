"""Bad values for each role fail before anything is changed, with a message naming the variable.

The cases run in one ansible-playbook per inventory (--tags preflight: argument-spec validation and the preflight
asserts only, so no case can reach a cloud or a cluster). docs/targets.md carries the same table; the last test checks
that every message there is the one the role prints. `python tests/targets/test_bad_values.py` prints the table.
"""

import json
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from conftest import REPO, ansible_playbook, clean_env

GKE_POOL = {"name": "gpu-l4", "node_count": 1, "instance_type": "g2-standard-8", "gpu_product": "NVIDIA-L4",
            "gpus_per_node": 1, "time_slicing_replicas": 4, "accelerator_type": "nvidia-l4"}
EKS_POOL = {"name": "gpu-a10g", "node_count": 1, "instance_type": "g5.xlarge", "gpu_product": "NVIDIA-A10G",
            "gpus_per_node": 1, "time_slicing_replicas": 4}

# (inventory, role, entry point, variables, what the message must name)
CASES = [
    ("gke", "gke_cluster", "main", {"gke_cluster_auth_kind": "oauth"}, "gke_cluster_auth_kind"),
    ("gke", "gke_cluster", "main", {"gke_cluster_gpu_driver_version": "NEWEST"}, "gke_cluster_gpu_driver_version"),
    ("gke", "gke_cluster", "main", {"gke_cluster_node_pools": [{**GKE_POOL, "gpus_per_node": "two"}]}, "gpus_per_node"),
    ("gke", "gke_cluster", "main", {"gke_cluster_node_pools": [{**GKE_POOL, "disk_size_gb": "big"}]}, "disk_size_gb"),
    ("gke", "gke_cluster", "main", {"gke_cluster_node_pools": [{k: v for k, v in GKE_POOL.items()
                                                                if k != "time_slicing_replicas"}]}, "time_slicing_replicas"),
    ("gke", "gke_cluster", "main", {"gke_cluster_node_pools": [{**GKE_POOL, "gpu_count": 1}]}, "gpu_count"),
    ("gke", "gke_cluster", "main", {"gke_cluster_node_pools": [{**GKE_POOL, "name": "GPU_L4"}]}, "harness_gpu_node_pools[].name"),
    ("gke", "gke_cluster", "main", {"gke_cluster_node_pools": [{**GKE_POOL, "time_slicing_replicas": 64}]}, "time_slicing_replicas"),
    ("gke", "gke_cluster", "main", {"gke_cluster_node_pools": [{**GKE_POOL, "min_nodes": 3, "max_nodes": 2}]}, "min_nodes"),
    ("gke", "gke_cluster", "main", {"gke_cluster_node_pools": [{k: v for k, v in GKE_POOL.items() if k != "accelerator_type"}
                                                               | {"gpu_product": "NVIDIA-B200"}]}, "accelerator_type"),
    # Who installs the driver must fit the device plugin and the node image (NVIDIA's GKE page; NVIDIA AI Cluster
    # Runtime's GKE GPU setup: the label that switches GKE's device plugin off also stops GKE's managed install).
    ("gke", "gke_cluster", "main", {"gke_cluster_gpu_driver": "nvidia"}, "gke_cluster_gpu_driver"),
    ("gke", "gke_cluster", "main", {"gke_cluster_device_plugin": "operator", "gke_cluster_gpu_driver_version": "DEFAULT"},
     "allowed with it: INSTALLATION_DISABLED"),
    ("gke", "gke_cluster", "main", {"gke_cluster_device_plugin": "operator", "gke_cluster_gpu_driver": "gke"},
     "allowed with it: google_installer, operator"),
    ("gke", "gke_cluster", "main", {"gke_cluster_device_plugin": "gke", "gke_cluster_gpu_driver": "google_installer"},
     "gke_cluster_gpu_driver is \"google_installer\""),
    ("gke", "gke_cluster", "main", {"gke_cluster_device_plugin": "operator", "gke_cluster_gpu_driver": "operator"},
     "gke_cluster_image_type is \"COS_CONTAINERD\""),
    ("gke", "gpu_operator", "main", {"gpu_operator_device_plugin": "operator", "gpu_operator_gke_driver": "operator"},
     "gpu_operator_gke_image_type is \"COS_CONTAINERD\""),
    ("gke", "gpu_operator", "main", {"gpu_operator_gke_driver": "google_installer"}, "gpu_operator_gke_driver is"),
    ("eks", "eks_cluster", "main", {"eks_cluster_state": "deleted"}, "eks_cluster_state"),
    ("eks", "eks_cluster", "main", {"eks_cluster_node_pools": [{**EKS_POOL, "ami_type": "AL2_x86_64"}]}, "ami_type"),
    ("eks", "eks_cluster", "main", {"eks_cluster_default_ami_type": "AL2023_x86_64_STANDARD"}, "eks_cluster_default_ami_type"),
    ("eks", "eks_cluster", "main", {"eks_cluster_subnet_ids": ["subnet-0a1b2c3d"]}, "eks_cluster_subnet_ids"),
    # No EKS-optimized Amazon Linux 2 AMI exists for Kubernetes 1.33 and later (the inventory's version).
    ("eks", "eks_cluster", "main", {"eks_cluster_node_pools": [{**EKS_POOL, "ami_type": "AL2_x86_64_GPU"}]},
     "eks_cluster_kubernetes_version"),
    ("eks", "eks_cluster", "main", {"eks_cluster_kubernetes_version": "1.34", "eks_cluster_default_ami_type": "AL2_x86_64_GPU",
                                    "eks_cluster_node_pools": [EKS_POOL]}, "Amazon Linux 2 AMIs stop at 1.32"),
    ("eks", "eks_cluster", "main", {"eks_cluster_kubernetes_version": "1.33.1"}, "eks_cluster_kubernetes_version"),
    ("eks", "eks_cluster", "main", {"eks_cluster_node_pools": [{**EKS_POOL, "max_nodes": 0, "min_nodes": 0}]}, "max_nodes"),
    ("self_managed", "gpu_operator", "main", {"gpu_operator_platform": "aks"}, "gpu_operator_platform"),
    ("self_managed", "gpu_operator", "main", {"gpu_operator_platform": "local"}, "gpu_operator_platform"),
    ("self_managed", "gpu_operator", "main", {"gpu_operator_chart_version": "latest"}, "gpu_operator_chart_version"),
    ("self_managed", "gpu_operator", "main", {"gpu_operator_device_plugin": "gke"}, "gpu_operator_device_plugin"),
    ("self_managed", "time_slicing", "main", {"time_slicing_probe_overflow": 0}, "time_slicing_probe_overflow"),
    ("self_managed", "time_slicing", "verify", {"time_slicing_verify_node_selector": "nvidia.com/gpu.present in (true)"},
     "time_slicing_verify_node_selector"),
    ("self_managed", "time_slicing", "main", {"time_slicing_node_pools": [{**EKS_POOL, "time_slicing_replicas": 0}]},
     "time_slicing_replicas"),
    ("self_managed", "node_prep", "main", {"node_prep_node_pool": "gpu-h100"}, "node_prep_node_pool"),
    ("self_managed", "node_prep", "main", {"node_prep_gpu_taint": {"key": "nvidia.com/gpu", "value": "present",
                                                                    "effect": "NoEffect"}}, "effect"),
    # The controller stands in for the GPU host: this machine is Debian 12, for which NVIDIA publishes no driver container.
    ("self_managed", "node_prep", "main", {"node_prep_driver_from_operator": True}, "node_prep_driver_from_operator"),
    # The local target's real node: its network stays inside the machine, its ports are ports.
    ("local", "real_node", "main", {"real_node_pod_cidr": "10.244.0.0/33"}, "real_node_pod_cidr"),
    ("local", "real_node", "main", {"real_node_pod_cidr": "10.244.0.5/24"}, "real_node_pod_cidr"),
    ("local", "real_node", "main", {"real_node_ip": "10.245.0.1"}, "real_node_ip"),
    ("local", "real_node", "main", {"real_node_service_cidr": "10.244.0.0/16"}, "real_node_service_cidr"),
    ("local", "real_node", "main", {"real_node_service_cidr": "10.96.0.5/16"}, "real_node_service_cidr"),
    ("local", "real_node", "main", {"real_node_cluster_domain": "Cluster_Local"}, "real_node_cluster_domain"),
    ("local", "real_node", "main", {"real_node_kubelet_port": 70000}, "real_node_kubelet_port"),
    ("local", "real_node", "main", {"real_node_kube_proxy_healthz_port": 16250}, "ports must differ"),
    ("local", "real_node", "main", {"real_node_insecure_registries": ["registry.example.com:5000"]},
     "real_node_insecure_registries"),
    ("local", "real_node", "main", {"real_node_volumes": 65}, "real_node_volumes"),
    ("local", "real_node", "main", {"real_node_volume_size": "10GB"}, "real_node_volume_size"),
    ("local", "real_node", "main", {"real_node_gpus": 0}, "real_node_gpus"),
    ("local", "real_node", "main", {"real_node_gpus": 2}, "do not match the pool the node joins"),
    ("local", "real_node", "main", {"real_node_storage_class": "Harness_Local"}, "real_node_storage_class"),
    # Resource requests the inventory sets: checked before any object is applied (the API server would refuse them
    # only after the role had applied others).
    ("local", "model_services", "main", {"model_services_platform_requests": {"cpu": "lots", "memory": "256Mi"}},
     "model_services_platform_requests"),
    ("local", "model_services", "main", {"model_services_worker_resources": {"cpu": "100m", "gpu": 1}},
     "model_services_worker_resources"),
    # The monitoring's install mode, and what the objects mode (an operator that runs already) can configure.
    ("local", "prometheus_stack", "main", {"prometheus_stack_install": "helm"}, "prometheus_stack_install"),
    ("local", "prometheus_stack", "main", {"prometheus_stack_alert_slack": {"secret": "slack", "key": "url",
                                                                            "channel": "#alerts"}},
     "takes webhook receivers only"),
]
# A looped assert reports "One or more items failed"; the item's own message is the one a user reads.
FIRST_MESSAGE = ("{{ (ansible_failed_result.results | default([]) | selectattr('failed', 'defined') | selectattr('failed')"
                 " | map(attribute='msg') | list + [ansible_failed_result.msg]) | first }}")
# Credentials that pass the credential checks, so the value checks behind them are reached. Nothing is called:
# the run is limited to --tags preflight.
FAKE_CREDENTIALS = {"GCP_PROJECT": "example-project", "AWS_REGION": "us-east-1", "AWS_PROFILE": "example",
                    "EKS_SUBNET_IDS": "subnet-0a1b2c3d,subnet-0e1f2a3b"}


def run_cases(tmp_path):
    key = tmp_path / "key.json"
    key.write_text("{}")
    env = clean_env(tmp_path, GCP_SERVICE_ACCOUNT_FILE=str(key), **FAKE_CREDENTIALS)
    messages = {}
    for inventory in sorted({c[0] for c in CASES}):
        plays = []
        for i, (inv, role, entry, variables, _) in enumerate(CASES):
            if inv != inventory:
                continue
            plays.append({
                "name": f"case {i}", "hosts": "controller", "gather_facts": False,
                "vars": {"harness_gpu_node_pool": "gpu-a10"},
                "tasks": [{"block": [{"name": "Run the role", "tags": ["always"], "ansible.builtin.include_role": {
                    "name": role, **({"tasks_from": f"{entry}.yml"} if entry != "main" else {})}, "vars": variables},
                    {"name": "The role passed", "ansible.builtin.set_fact": {"_case_message": "PASSED"}, "tags": ["always"]}],
                    "rescue": [{"name": "Keep the message", "tags": ["always"],
                                "ansible.builtin.set_fact": {"_case_message": FIRST_MESSAGE}}],
                    "always": [{"name": "Write the message", "tags": ["always"], "ansible.builtin.copy": {
                        "dest": str(tmp_path / f"case-{i}.txt"), "content": "{{ _case_message }}", "mode": "0644"}}]}],
            })
        playbook = REPO / "tests" / "targets" / f".bad-values-{inventory}.yml"
        playbook.write_text(yaml.safe_dump(plays, sort_keys=False))
        try:
            r = ansible_playbook("-i", f"inventories/{inventory}", str(playbook), "--tags", "preflight", env=env)
        finally:
            playbook.unlink()
        assert "Traceback" not in r.stdout + r.stderr, r.stdout[-3000:]
    for i in range(len(CASES)):
        messages[i] = (tmp_path / f"case-{i}.txt").read_text().strip()
    return messages


@pytest.fixture(scope="module")
def messages(tmp_path_factory):
    return run_cases(tmp_path_factory.mktemp("bad-values"))


@pytest.mark.parametrize("index", range(len(CASES)), ids=[f"{c[1]}-{c[4]}-{i}" for i, c in enumerate(CASES)])
def test_bad_value_is_refused_naming_the_variable(messages, index):
    message = messages[index]
    assert message != "PASSED", f"case {CASES[index]} was accepted"
    assert CASES[index][4] in message, message


PIPE = "\\|"  # a | inside a Markdown table cell


def normalise(text):
    return " ".join(text.split())


def test_docs_table_shows_the_real_messages(messages):
    docs = normalise((REPO / "docs" / "targets.md").read_text())
    missing = [normalise(messages[i]) for i in messages if normalise(messages[i]).replace("|", PIPE) not in docs]
    assert not missing, "docs/targets.md lacks these messages (regenerate: python tests/targets/test_bad_values.py):\n" + \
        "\n".join(missing)


def table(messages):
    rows = ["| role | variable | bad value | message |", "| --- | --- | --- | --- |"]
    for i, (_, role, entry, variables, _) in enumerate(CASES):
        role_name = role if entry == "main" else f"{role} ({entry})"
        for name, value in variables.items():
            if name.endswith("_node_pools"):  # show only what differs from a valid pool
                base = GKE_POOL if role == "gke_cluster" else EKS_POOL
                if value == [base]:  # the valid pool, set only so that another variable applies to it
                    continue
                changed = {k: v for k, v in value[0].items() if base.get(k, object()) != v}
                dropped = [k for k in base if k not in value[0]]
                name = f"{name}[0]"
                value = {**changed, **{k: "(missing)" for k in dropped}}
            cell = normalise(messages[i]).replace("|", PIPE)
            rows.append(f"| {role_name} | `{name}` | `{json.dumps(value)}` | {cell} |")
    return "\n".join(rows)


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        print(table(run_cases(Path(d))))
