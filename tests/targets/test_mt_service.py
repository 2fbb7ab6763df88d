"""Enabling the mt service is data: the service table entry, a model volume per target, and the same manifests
(rendered as the roles render them, tests/targets/render.yml). Expectations come from the seed platform's table
(shared DESIGN: mt 2-6 replicas, 10 jobs per pod) and the inventory, not from the rendering itself."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import REPO, ansible_playbook

SERVICES = yaml.safe_load((REPO / "roles/harness/defaults/main.yml").read_text())["harness_services"]
PVC = {"persistentVolumeClaim": {"claimName": "mt-model", "readOnly": True}}


def enabled_mt() -> list[dict]:
    return [{**s, "enabled": True} if s["name"] == "mt" else s for s in SERVICES]


def render_with(tmp_path, target: str, *args: str) -> tuple[int, dict | None, str]:
    r = ansible_playbook("-i", f"inventories/{target}", "tests/targets/render.yml", "-e", f"render_out={tmp_path}",
                         *args)
    out = json.loads((tmp_path / "controller.json").read_text()) if r.returncode == 0 else None
    return r.returncode, out, r.stdout + r.stderr


def render(tmp_path, target: str, **extra) -> tuple[int, dict | None, str]:
    return render_with(tmp_path, target, "-e", json.dumps({"harness_services": enabled_mt(), **extra}))


def obj(rendering: dict, kind: str, name: str) -> dict:
    found = [o for o in rendering["objects"] if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


# One cloud target: tests/targets/test_one_path.py finds the service objects of every target the same apart from
# the documented per-target variables.
@pytest.mark.parametrize("target", ["gke"])
def test_enabling_mt_deploys_it_with_its_model_volume_and_policy(tmp_path, target):
    rc, r, log = render(tmp_path, target, harness_model_volumes={"mt": PVC})
    assert rc == 0, log[-3000:]
    spec = obj(r, "Deployment", "mt")["spec"]
    pod = spec["template"]["spec"]
    worker = pod["containers"][0]
    assert worker["command"] == ["python", "-m", "workers.worker", "--service", "mt"]
    assert worker["image"].rsplit("/", 1)[-1].startswith("mt-worker")
    assert {"name": "model", "mountPath": "/models/mt", "readOnly": True} in worker["volumeMounts"]
    assert {"name": "model", **PVC} in pod["volumes"]
    env = {e["name"]: e.get("value") for e in worker["env"]}
    assert env["MT_MODEL"] == "/models/mt" and env["MT_TARGET_LANGUAGES"] == "de"
    assert env["MT_DEVICE"] == "cuda"  # GPU nodes on every cloud target
    assert spec["replicas"] == 2
    hpa = obj(r, "HorizontalPodAutoscaler", "mt")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 6)
    external = [m["external"] for m in hpa["metrics"] if m["type"] == "External"]
    assert external and external[0]["target"]["averageValue"] in ("10", 10)
    assert external[0]["metric"]["selector"]["matchLabels"]["queue_name"] == "mt"
    gateway = obj(r, "Deployment", "gateway")["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "MT_TARGET_LANGUAGES", "value": "de"} in gateway["env"]
    queues = next(e["value"] for e in gateway["env"] if e["name"] == "QUEUES")
    assert "mt" in queues.split(",") or "mt:mt" in queues.split(",")
    for kind in ("Service", "PodDisruptionBudget", "NetworkPolicy"):
        obj(r, kind, "mt-metrics" if kind == "Service" else "mt")


def test_the_local_inventory_mounts_its_demo_model_through_a_local_volume(tmp_path):
    """The demo model is built on the local node and offered as a `local` PersistentVolume pre-bound to claim
    mt-model, which the pods mount as on a cloud: the namespace's restricted PodSecurity level refuses a pod's hostPath
    (found live: "volume model uses restricted volume type hostPath"). Expectations from the local inventory."""
    platform = yaml.safe_load((REPO / "inventories/local/group_vars/all/platform.yml").read_text())
    rc, r, log = render(tmp_path, "local")
    assert rc == 0, log[-3000:]
    pod = obj(r, "Deployment", "mt")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "model")
    assert volume == {"name": "model", "persistentVolumeClaim": {"claimName": "mt-model", "readOnly": True}}
    assert not any("hostPath" in v for v in pod["volumes"])
    claim = obj(r, "PersistentVolumeClaim", "mt-model")
    pv = obj(r, "PersistentVolume", claim["spec"]["volumeName"])
    assert claim["spec"]["storageClassName"] == pv["spec"]["storageClassName"] == ""
    assert pv["spec"]["claimRef"] == {"namespace": claim["metadata"]["namespace"], "name": "mt-model"}
    assert pv["spec"]["local"]["path"].endswith("/local/models/mt")
    terms = pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"]
    assert terms == [{"matchExpressions": [{"key": k, "operator": "In", "values": [v]}
                                           for k, v in platform["harness_pod_node_selector"].items()]}]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["MT_DEVICE"] == "cpu" and env["MT_COMPUTE_TYPE"] == "int8"


def test_a_demo_model_mounted_another_way_is_refused_naming_the_claim(tmp_path):
    rc, _, log = render(tmp_path, "local", harness_model_volumes={"mt": {"hostPath": {"path": "/srv/mt"}}})
    assert rc != 0
    assert "harness_model_volumes.mt must be" in log and "claimName: mt-model" in log, log[-3000:]


@pytest.mark.parametrize("volumes, named", [
    ({}, "mt"),
    ({"mt": "mt-model"}, "mt"),
])
def test_mt_without_a_model_volume_is_refused_before_anything_is_applied(tmp_path, volumes, named):
    rc, _, log = render(tmp_path, "gke", harness_model_volumes=volumes)
    assert rc != 0
    assert f"service(s) {named} mount a model" in log and "harness_model_volumes" in log
    assert "persistentVolumeClaim" in log  # what is allowed


def env_of(deployment: dict) -> dict:
    return {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_the_dubbing_pipeline_deploys_its_orchestrator_and_names_its_queue(tmp_path):
    """harness_dubbing_enabled: the orchestrator runs from the gateway's image with the workers' queue policy, and
    the gateway, the exporter and the orchestrator all see the dubbing queue beside the stage queues."""
    rc, r, log = render(tmp_path, "gke", harness_model_volumes={"mt": PVC}, harness_dubbing_enabled=True)
    assert rc == 0, log[-3000:]
    orch = obj(r, "Deployment", "dubbing")
    pod = orch["spec"]["template"]["spec"]
    assert pod["containers"][0]["command"] == ["python", "-m", "workers.dubbing"]
    assert pod["containers"][0]["image"] == obj(r, "Deployment", "gateway")["spec"]["template"]["spec"][
        "containers"][0]["image"]
    assert "nvidia.com/gpu" not in pod["containers"][0]["resources"].get("limits", {})  # it only adds jobs
    mt_env, env = env_of(obj(r, "Deployment", "mt")), env_of(orch)
    for name in ("QUEUE_ATTEMPTS", "QUEUE_LOCK_DURATION_MS", "QUEUE_STALLED_INTERVAL_MS"):
        assert env[name] == mt_env[name], name
    for app in ("dubbing", "gateway", "queue-exporter"):
        queues = set(env_of(obj(r, "Deployment", app))["QUEUES"].split(","))
        assert {"dubbing:dubbing", "stt:stt", "mt:mt", "tts:tts"} <= queues, (app, queues)
    ingress = obj(r, "NetworkPolicy", "dubbing")["spec"]["ingress"][0]
    assert ingress["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "monitoring"}
    assert obj(r, "ServiceMonitor", "dubbing")["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "dubbing"}
    assert obj(r, "Service", "dubbing")["spec"]["ports"][0]["port"] == 9105


def test_without_the_pipeline_there_is_no_orchestrator_and_no_dubbing_queue(tmp_path):
    rc, r, log = render(tmp_path, "gke", harness_model_volumes={"mt": PVC})
    assert rc == 0, log[-3000:]
    assert not [o for o in r["objects"] if o["metadata"]["name"] == "dubbing"]
    assert "dubbing" not in env_of(obj(r, "Deployment", "gateway"))["QUEUES"]


def test_the_pipeline_without_its_stage_services_is_refused(tmp_path):
    no_mt = [{**s, "enabled": False} if s["name"] == "mt" else s for s in enabled_mt()]
    rc, _, log = render(tmp_path, "gke", harness_dubbing_enabled=True, harness_services=no_mt)
    assert rc != 0
    assert "harness_dubbing_enabled is true but the service(s) mt are not enabled" in log, log[-2000:]


def test_the_local_dubbing_vars_are_the_default_table_with_mt_enabled():
    """inventories/extra-vars/local-dubbing.yml copies the table (an extra-vars file replaces a list whole): it must not
    drift."""
    extra = yaml.safe_load((REPO / "inventories/extra-vars/local-dubbing.yml").read_text())
    assert extra["harness_dubbing_enabled"] is True
    assert [{k: v for k, v in s.items() if k != "enabled"} for s in extra["harness_services"]] == [
        {k: v for k, v in s.items() if k != "enabled"} for s in SERVICES]
    assert {s["name"] for s in extra["harness_services"] if s["enabled"]} == {"stt", "tts", "mt", "lipsync", "xtts"}
    # lipsync and xtts run on the optional torch images, which only images_build_coqui builds.
    assert extra["images_build_coqui"] is True


def render_dubbing(tmp_path, *extra: str) -> tuple[int, dict | None, str]:
    return render_with(tmp_path, "local", "-e", "@inventories/extra-vars/local-dubbing.yml", *extra)


def test_the_local_dubbing_vars_deploy_all_five_services_with_their_demo_models(tmp_path):
    """With inventories/extra-vars/local-dubbing.yml, the local target deploys stt, tts, mt, lipsync and xtts, and each
    model a worker image does not carry (mt, lipsync, xtts: model_mount in the table) comes from the random-weight demo
    model built on the real node, through its own claim and local PersistentVolume. Expectations from the extra-vars
    file and the local inventory."""
    extra = yaml.safe_load((REPO / "inventories/extra-vars/local-dubbing.yml").read_text())
    platform = yaml.safe_load((REPO / "inventories/local/group_vars/all/platform.yml").read_text())
    rc, r, log = render_dubbing(tmp_path)
    assert rc == 0, log[-3000:]
    table = {s["name"]: s for s in extra["harness_services"] if s["enabled"]}
    for name, svc in table.items():
        pod = obj(r, "Deployment", name)["spec"]["template"]["spec"]
        assert pod["containers"][0]["command"] == svc["command"]
        if "model_mount" not in svc:
            continue
        assert name in platform["harness_demo_models"]
        volume = next(v for v in pod["volumes"] if v["name"] == "model")
        assert volume == {"name": "model", "persistentVolumeClaim": {"claimName": f"{name}-model", "readOnly": True}}
        mounts = pod["containers"][0]["volumeMounts"]
        assert {"name": "model", "mountPath": svc["model_mount"], "readOnly": True} in mounts
        claim = obj(r, "PersistentVolumeClaim", f"{name}-model")
        pv = obj(r, "PersistentVolume", claim["spec"]["volumeName"])
        assert pv["spec"]["claimRef"]["name"] == f"{name}-model"
        assert pv["spec"]["local"]["path"].endswith(f"/local/models/{name}")
    assert {n for n, s in table.items() if "model_mount" in s} == {"mt", "lipsync", "xtts"}
    obj(r, "Deployment", "dubbing")


def test_a_demo_model_no_builder_exists_for_is_refused_naming_it(tmp_path):
    rc, _, log = render_dubbing(tmp_path, "-e", json.dumps({"harness_demo_models": ["mt", "stt"]}))
    assert rc != 0
    assert 'harness_demo_models=["mt", "stt"] names ["stt"]' in log and '"lipsync"' in log, log[-3000:]
