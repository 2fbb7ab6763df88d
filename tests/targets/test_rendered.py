"""What each target's roles would send, rendered from its inventory, checked against the inventory."""

import yaml
from conftest import TARGETS, ansible_playbook, clean_env


def gpu_stack_configmaps(r):
    """ConfigMaps of the GPU stack: not the services' (cost exporter) or monitoring's (dashboards)."""
    return [o for o in r["objects"] if o["kind"] == "ConfigMap"
            and o["metadata"]["namespace"] not in (r["namespace"], r["monitoring_namespace"])]


def test_every_target_renders_objects(rendered):
    for target in TARGETS:
        kinds = {o["kind"] for o in rendered[target]["objects"]}
        assert "Namespace" in kinds, target


def test_gke_node_pools_carry_native_time_sharing_spot_and_driver(rendered):
    r = rendered["gke"]
    gpu_bodies = [b for b in r["gke_node_pools"] if b["name"] != "system"]
    assert len(gpu_bodies) == len(r["node_pools"])
    for pool, body in zip(r["node_pools"], gpu_bodies, strict=False):
        acc = body["config"]["accelerators"][0]
        assert body["name"] == pool["name"]
        assert acc["acceleratorType"] == pool["accelerator_type"]
        assert int(acc["acceleratorCount"]) == pool["gpus_per_node"]
        assert acc["gpuSharingConfig"] == {
            "gpuSharingStrategy": "TIME_SHARING",
            "maxSharedClientsPerGpu": str(pool["time_slicing_replicas"]),
        }
        assert acc["gpuDriverInstallationConfig"]["gpuDriverVersion"] == "DEFAULT"
        assert body["config"]["spot"] is pool.get("spot", False)
        assert body["config"]["machineType"] == pool["instance_type"]
        assert body["autoscaling"] == {
            "enabled": True,
            "minNodeCount": pool.get("min_nodes", pool["node_count"]),
            "maxNodeCount": pool.get("max_nodes", pool["node_count"]),
        }
        assert body["initialNodeCount"] == pool["node_count"]


def test_gke_uses_its_own_device_plugin_and_no_configmap(rendered):
    r = rendered["gke"]
    values = r["gpu_operator_values"]
    assert values["driver"]["enabled"] is False, "GKE installs the driver"
    assert values["devicePlugin"]["enabled"] is False, "GKE's device plugin advertises nvidia.com/gpu"
    assert values["hostPaths"]["driverInstallDir"] == "/home/kubernetes/bin/nvidia"
    assert values["cdi"] == {"enabled": True, "default": True}
    assert not gpu_stack_configmaps(r), "native sharing needs no device plugin config"
    quota = [o for o in r["objects"] if o["kind"] == "ResourceQuota"]
    assert quota and quota[0]["spec"]["scopeSelector"]["matchExpressions"][0]["values"] == [
        "system-node-critical", "system-cluster-critical"]


def test_eks_node_groups_use_gpu_amis_spot_and_taint(rendered):
    r = rendered["eks"]
    groups = {g["nodegroupName"]: g for g in r["eks_nodegroups"]}
    assert groups["system"]["amiType"] == "AL2023_x86_64_STANDARD"
    assert "taints" not in groups["system"]
    for pool in r["node_pools"]:
        g = groups[pool["name"]]
        assert g["amiType"] == pool.get("ami_type", "AL2023_x86_64_NVIDIA")
        assert g["capacityType"] == ("SPOT" if pool.get("spot") else "ON_DEMAND")
        assert g["instanceTypes"] == [pool["instance_type"]]
        assert g["scalingConfig"] == {"minSize": pool.get("min_nodes", pool["node_count"]),
                                      "maxSize": pool.get("max_nodes", pool["node_count"]),
                                      "desiredSize": pool["node_count"]}
        assert g["labels"]["nvidia.com/device-plugin.config"] == pool["name"]
        assert g["taints"] == [{"key": "nvidia.com/gpu", "value": "present", "effect": "NO_SCHEDULE"}]


def test_eks_keeps_the_ami_driver_and_toolkit(rendered):
    values = rendered["eks"]["gpu_operator_values"]
    assert values["driver"]["enabled"] is False
    assert values["toolkit"]["enabled"] is False
    assert values["devicePlugin"]["enabled"] is True


def test_self_managed_gets_driver_and_toolkit_from_the_operator(rendered):
    values = rendered["self_managed"]["gpu_operator_values"]
    assert values["driver"]["enabled"] is True
    assert values["toolkit"]["enabled"] is True


def test_dcgm_exporter_and_its_service_monitor_on_every_cluster_target(rendered):
    for target in TARGETS:
        dcgm = rendered[target]["gpu_operator_values"]["dcgmExporter"]
        assert dcgm["enabled"] is True and dcgm["serviceMonitor"]["enabled"] is True, target


def test_time_slicing_config_has_each_pools_replicas(rendered):
    for target in ("eks", "self_managed"):
        r = rendered[target]
        values = r["gpu_operator_values"]["devicePlugin"]["config"]
        cm = gpu_stack_configmaps(r)
        assert len(cm) == 1, target
        assert cm[0]["metadata"]["name"] == values["name"]
        assert values["default"] in cm[0]["data"]
        for pool in r["node_pools"]:
            config = yaml.safe_load(cm[0]["data"][pool["name"]])
            assert config["version"] == "v1"
            assert config["sharing"]["timeSlicing"]["resources"] == [
                {"name": "nvidia.com/gpu", "replicas": pool["time_slicing_replicas"]}]


def test_self_managed_nodes_are_labelled_and_tainted(rendered):
    nodes = rendered["self_managed"]["nodes"]
    assert [n["metadata"]["name"] for n in nodes] == ["gpu-node-1", "gpu-node-2"]
    for node in nodes:
        assert node["metadata"]["labels"]["nvidia.com/device-plugin.config"] == "gpu-a10"
        assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"} in node["spec"]["taints"]


def test_gke_toolkit_reads_the_containerd_config_from_the_file(rendered):
    # NVIDIA's GKE page, known issue on GKE 1.33+: without this the toolkit misconfigures containerd's config.toml.
    env = rendered["gke"]["gpu_operator_values"]["toolkit"].get("env", [])
    assert {"name": "RUNTIME_CONFIG_SOURCE", "value": "file"} in env, env


def test_gke_kubeconfig_authenticates_with_application_default_credentials(rendered):
    exec_ = rendered["gke"]["gke_kubeconfig"]["users"][0]["user"]["exec"]
    assert exec_["command"] == "gke-gcloud-auth-plugin"
    # Without the flag the plugin asks gcloud, which a service-account key file alone does not configure.
    assert exec_["args"] == ["--use_application_default_credentials"], exec_


def test_gke_kubeconfig_names_the_service_account_key_file(tmp_path):
    import json

    key = tmp_path / "sa.json"
    key.write_text("{}")
    r = ansible_playbook("-i", "inventories/gke", "tests/targets/render.yml", "-e", f"render_out={tmp_path}",
                         env=clean_env(tmp_path, GCP_SERVICE_ACCOUNT_FILE=str(key), GCP_PROJECT="example-project"))
    assert r.returncode == 0, r.stdout[-3000:]
    exec_ = json.loads((tmp_path / "controller.json").read_text())["gke_kubeconfig"]["users"][0]["user"]["exec"]
    assert exec_["env"] == [{"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": str(key)}], exec_
    assert "{}" not in json.dumps(exec_["env"])  # the path, never the key's content


def test_gke_system_pool_is_a_node_pool_of_its_own(rendered):
    # google.cloud.gcp_container_cluster deletes the cluster's default-pool right after creating the cluster
    # (delete_default_node_pool in the module), so the CPU pool must be created as its own node pool.
    bodies = {b["name"]: b for b in rendered["gke"]["gke_node_pools"]}
    assert "system" in bodies, sorted(bodies)
    system = bodies["system"]
    assert system["config"]["machineType"] == "e2-standard-4" and system["initialNodeCount"] == 1
    assert "accelerators" not in system["config"], "the system pool has no GPUs"
    assert "nvidia.com/device-plugin.config" not in system["config"]["labels"]
    assert rendered["gke"]["gke_node_pools"][0]["name"] == "system", "created before the GPU pools"
