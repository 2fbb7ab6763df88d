"""One deployment path: what GKE, EKS and self-managed clusters get from the service and monitoring roles is the same
objects the local target applies to its real node (site.yml runs them there, tests/e2e checks them), apart from the
documented per-target variables.

The local inventory is rendered with its real node on (local_real_node_enabled, which puts its services on the
cluster path) and on the clouds' profile (harness_profile is an inventory variable too: the fast profile divides
every period). Each target's own values of the per-target variables (render.yml's per_target, read from that
target's inventory) are taken out of its objects; what is left must be equal, object for object. The only objects
one side has are the named add-on steps (ADD_ON_STEPS): the GPU Operator's (clouds; the local node's GPUs are
simulated by roles/real_node), EKS's storage class, and Grafana's admin Secret (the kube-prometheus-stack chart; the
local node's operator has no Grafana).
"""

from __future__ import annotations

import copy
import json

import pytest
import yaml
from conftest import REPO, TARGETS, ansible_playbook

# Objects only some targets have, each from a named add-on step (README, "Targets differ in variables").
ROLE_DEFAULTS = yaml.safe_load((REPO / "roles/model_services/defaults/main.yml").read_text())
ADD_ON_STEPS = {
    ("ConfigMap", "gpu-operator", "time-slicing-config"): "GPU Operator (clouds)",
    ("Namespace", "", "gpu-operator"): "GPU Operator (clouds)",
    ("ResourceQuota", "gpu-operator", "gpu-operator-quota"): "GPU Operator on GKE (its system-node-critical pods)",
    ("StorageClass", "", "gp3"): "EKS add-ons (roles/cluster_addons: the EBS CSI driver's default class)",
    ("Secret", "monitoring", "grafana-admin"): "kube-prometheus-stack's Grafana (prometheus_stack_install: chart)",
}


@pytest.fixture(scope="module")
def local_on_the_node(tmp_path_factory):
    d = tmp_path_factory.mktemp("render-local-node")
    r = ansible_playbook("-i", "inventories/local", "tests/targets/render.yml", "-e", f"render_out={d}",
                         "-e", "local_real_node_enabled=true", "-e", "harness_profile=standard")
    assert r.returncode == 0, f"rendering local failed:\n{r.stdout[-4000:]}\n{r.stderr[-2000:]}"
    return json.loads((d / "controller.json").read_text())


def key(obj: dict) -> tuple[str, str, str]:
    return obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


def differences(a, b, path: str = "") -> list[str]:
    """Where two JSON values differ, as paths with both values."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str)
                for d in (differences(a.get(k), b.get(k), f"{path}/{k}") if k in a and k in b
                          else [f"{path}/{k}: only on {'local' if k in a else 'the target'}"])]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {json.dumps(a)[:200]} | {json.dumps(b)[:200]}"]


def _without(items: list, drop: list) -> list:
    return [i for i in items if i not in drop]


def normalise(obj: dict, v: dict) -> dict:
    """The object with what the per-target variables ``v`` decide taken out."""
    o = copy.deepcopy(obj)
    if o["kind"] == "Secret":  # generated on first run, different every rendering
        for field in ("data", "stringData"):
            o[field] = sorted(o.get(field, {}))
    if o["kind"] == "HorizontalPodAutoscaler":  # autoscaling_cpu_metric: off on the real node's 50m requests
        o["spec"]["metrics"] = [m for m in o["spec"]["metrics"]
                                if not (m["type"] == "Resource" and m["resource"]["name"] == "cpu")]
    # queue_redis_storage_class, cost_tracking_state_storage_class ("" on most targets: the default class).
    claims = o.get("spec", {}).get("volumeClaimTemplates", []) + ([o] if o["kind"] == "PersistentVolumeClaim" else [])
    for claim in claims:
        if claim["spec"].get("storageClassName") in v["storage_classes"]:
            claim["spec"].pop("storageClassName")
    template = o.get("spec", {}).get("template", {}).get("spec")
    if template is None:
        return o
    worker = o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "model-worker"
    placed = set(v["harness_pod_node_selector"]) | (set(v["model_services_gpu_node_selector"]) if worker else set())
    selector = {k: val for k, val in template.get("nodeSelector", {}).items() if k not in placed}
    template.pop("nodeSelector", None)
    if selector:
        template["nodeSelector"] = selector
    tolerations = _without(template.pop("tolerations", []), [] if worker else v["harness_pod_tolerations"])
    if tolerations:
        template["tolerations"] = tolerations
    for c in template.get("containers", []):
        registry = v["harness_image_registry"]
        assert c["image"].startswith(f"{registry}/"), (key(obj), c["image"], registry)
        # harness_images: the registry, and a digest where this project pushed the image (else the tag).
        c["image"] = c["image"].removeprefix(f"{registry}/").partition("@")[0].partition(":")[0]
        urls = (v["cost_tracking_prometheus_url"], v["prometheus_adapter_cluster_prometheus_url"])
        c["args"] = [a for a in c.get("args", []) if a.partition("=")[2] not in urls] or None
        extra_queues = ",".join(v["model_services_queue_exporter_extra_queues"])
        c["env"] = [e for e in c.get("env", []) if e.get("value") not in urls
                    and not (worker and e["name"] in v["model_services_worker_env"])
                    and not (e["name"] == "EXTRA_QUEUES" and e.get("value") == extra_queues)]
        if worker:  # the table's requests, or model_services_worker_resources merged over them
            c.pop("resources", None)
        elif o["metadata"]["name"] in ("gateway", "queue-exporter"):  # model_services_platform_requests
            requests = v["model_services_platform_requests"] or ROLE_DEFAULTS["model_services_platform_requests"]
            assert c["resources"]["requests"] == requests, (key(obj), c["resources"], requests)
            c["resources"].pop("requests")
    return o


@pytest.mark.parametrize("target", TARGETS)
def test_every_target_applies_the_objects_the_local_node_runs(rendered, local_on_the_node, target):
    cloud = {key(o): o for o in rendered[target]["objects"]}
    local = {key(o): o for o in local_on_the_node["objects"]}
    assert not set(local) - set(cloud), f"only the local target has {sorted(set(local) - set(cloud))}"
    extra = set(cloud) - set(local)
    unnamed = sorted(extra - set(ADD_ON_STEPS))
    assert not unnamed, f"{target} has objects of no named add-on step: {unnamed}"
    assert len(local) >= 50, sorted(local)  # the whole stack, not an empty rendering
    differ = []
    for k in sorted(local):
        a = normalise(local[k], local_on_the_node["per_target"])
        b = normalise(cloud[k], rendered[target]["per_target"])
        if a != b:
            differ.append(f"{'/'.join(k)}: {differences(a, b)}")
    assert not differ, "objects differ beyond the per-target variables (local | " + target + "):\n" + "\n".join(differ)


def test_the_comparison_sees_a_difference_outside_the_variables(local_on_the_node):
    """The normalisation takes out only the named variables: a changed port or label still differs."""
    v = local_on_the_node["per_target"]
    gateway = next(o for o in local_on_the_node["objects"] if key(o) == ("Deployment", "model-serving", "gateway"))
    changed = copy.deepcopy(gateway)
    changed["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] += 1
    assert normalise(changed, v) != normalise(gateway, v)
    relabelled = copy.deepcopy(gateway)
    relabelled["spec"]["template"]["spec"]["nodeSelector"]["pool"] = "other"
    assert normalise(relabelled, v) != normalise(gateway, v)
