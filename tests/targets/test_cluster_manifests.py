"""What the cluster path of the service and monitoring roles applies, rendered from each inventory
(tests/targets/render.yml calls the roles' own tasks/manifests.yml) and checked against the inventory and the
documentation. test_dry_run.py submits the same objects to a real kube-apiserver."""

import json
import re
from pathlib import Path

import pytest
import yaml
from conftest import REPO, TARGETS, ansible_playbook

# The roles whose cluster path applies Kubernetes objects.
CLUSTER_ROLES = ["queue", "model_services", "autoscaling", "cost_tracking", "prometheus_stack", "prometheus_adapter"]


def objects(rendered, target, kind=None, name=None):
    out = rendered[target]["objects"]
    if kind:
        out = [o for o in out if o["kind"] == kind]
    if name:
        out = [o for o in out if o["metadata"]["name"] == name]
    return out


def one(rendered, target, kind, name):
    found = objects(rendered, target, kind, name)
    assert len(found) == 1, f"{target}: expected one {kind}/{name}, rendered {len(found)}"
    return found[0]


# ---- item 15: every object of every target is rendered (and so dry-run by test_dry_run.py) ----

@pytest.mark.parametrize("target", TARGETS)
def test_every_service_object_is_rendered(rendered, target):
    r = rendered[target]
    ns = r["namespace"]
    for svc in r["services"]:
        for kind, name in [("Deployment", svc["name"]), ("Service", f"{svc['name']}-metrics"),
                           ("PodDisruptionBudget", svc["name"]), ("NetworkPolicy", svc["name"]),
                           ("ServiceMonitor", f"model-worker-{svc['name']}"),
                           ("HorizontalPodAutoscaler", svc["name"])]:
            assert one(rendered, target, kind, name)["metadata"]["namespace"] == ns
    for kind, name in [("Namespace", ns), ("Secret", "redis-auth"), ("StatefulSet", "redis"), ("Service", "redis"),
                       ("Deployment", "gateway"), ("Service", "gateway"), ("ServiceMonitor", "gateway"),
                       ("Deployment", "queue-exporter"), ("Service", "queue-exporter"),
                       ("ServiceMonitor", "queue-exporter"), ("NetworkPolicy", "default-deny"),
                       ("Deployment", "cost-exporter"), ("Service", "cost-exporter"), ("ConfigMap", "cost-exporter"),
                       ("ServiceMonitor", "cost-exporter"), ("PrometheusRule", "cost-alerts"),
                       ("ClusterRole", "gpu-serving-cost-exporter"), ("Namespace", r["monitoring_namespace"])]:
        one(rendered, target, kind, name)
    dashboards = sorted(p.stem for p in (REPO / "roles/prometheus_stack/files/dashboards").glob("*.json"))
    published = [o["metadata"]["name"].removeprefix("gpu-serving-dashboard-")
                 for o in objects(rendered, target, "ConfigMap")
                 if "grafana_dashboard" in o["metadata"].get("labels", {})]
    assert sorted(published) == dashboards
    assert r["prometheus_stack_values"]["prometheus"]["prometheusSpec"]
    adapter = yaml.safe_load(one(rendered, target, "ConfigMap", "prometheus-adapter")["data"]["config.yml"])
    assert adapter["externalRules"] and adapter["rules"] and "resourceRules" not in adapter
    for api in ("v1beta1.external.metrics.k8s.io", "v1beta1.custom.metrics.k8s.io", "v1beta2.custom.metrics.k8s.io"):
        assert one(rendered, target, "APIService", api)["spec"]["service"]["name"] == "prometheus-adapter"
    one(rendered, target, "Deployment", "prometheus-adapter")


@pytest.mark.parametrize("target", TARGETS)
def test_every_gateway_replica_mounts_the_generated_api_key(rendered, target):
    """The first API key is generated into a Secret (never into one replica's emptyDir, where it would be unreadable
    through the API and die with the pod); every replica mounts it where GATEWAY_API_KEY_FILE points and, as
    workers/gateway/keys.py does with a key file, registers it in the shared Redis key store."""
    secret = one(rendered, target, "Secret", "gateway-api-key")
    key = secret["stringData"]["key"]
    assert re.fullmatch(r"mgw_[A-Za-z0-9]{43}", key), "the key is not a generated mgw_ token"
    redis_password = one(rendered, target, "Secret", "redis-auth")["stringData"]["password"]
    assert key[4:] != redis_password
    spec = one(rendered, target, "Deployment", "gateway")["spec"]
    assert spec["replicas"] >= 2
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    key_file = Path(env["GATEWAY_API_KEY_FILE"])
    mount = next(m for m in container["volumeMounts"] if Path(m["mountPath"]) == key_file.parent)
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == "gateway-api-key" and mount.get("readOnly") is True
    assert volume["secret"]["items"] == [{"key": "key", "path": key_file.name}]
    # Readable by the gateway's user through its group only (0440, group fsGroup), not by everyone.
    assert volume["secret"]["defaultMode"] == 0o440 and pod["securityContext"]["fsGroup"] == pod["securityContext"][
        "runAsUser"]
    assert env.get("GATEWAY_KEY_STORE", "redis") == "redis"


def _k8s_tasks(path: Path):
    def walk(tasks):
        for t in tasks or []:
            yield t
            for section in ("block", "rescue", "always"):
                yield from walk(t.get(section))
    return [t for t in walk(yaml.safe_load(path.read_text())) if "kubernetes.core.k8s" in t]


@pytest.mark.parametrize("role", CLUSTER_ROLES)
def test_cluster_path_applies_only_rendered_objects(role):
    """Whatever main.yml and cluster.yml apply comes from the role's manifests.yml, so the rendering above is all
    of it: an object written inline in a task would be applied without being dry-run."""
    paths = [p for p in (REPO / "roles" / role / "tasks" / f for f in ("main.yml", "cluster.yml")) if p.is_file()]
    tasks = [(path, task) for path in paths for task in _k8s_tasks(path)]
    assert tasks, f"{role}: no kubernetes.core.k8s task found in {paths}"
    for path, task in tasks:
        args = task["kubernetes.core.k8s"]
        if args.get("state") == "absent":
            # A removal (services no longer enabled) applies nothing: it names a kind and a name, never a body.
            assert "definition" not in args and "src" not in args, (
                f"{path.relative_to(REPO)}: task {task['name']!r} removes objects by a definition written inline")
            continue
        source = str(args.get("definition", "")) + str(task.get("loop", ""))
        assert f"__{role}_" in source and "manifests" in source, (
            f"{path.relative_to(REPO)}: task {task['name']!r} applies objects that tasks/manifests.yml does not render")


# ---- item 3 (and 2): ServiceMonitors keep the labels their exporters set ----

# Labels the Prometheus Operator attaches to every target of a ServiceMonitor. A scraped series carrying one of
# them is renamed exported_<label> unless the endpoint has honorLabels: true.
TARGET_LABELS = {"job", "instance", "namespace", "service", "pod", "container", "endpoint"}
# The labels the exporters put on their series (shared DESIGN's metric contract; the gateway's
# gateway_jobs_submitted{service} from workers/gateway/metrics.py).
EXPORTED_LABELS = {
    "cost-exporter": {"service", "namespace"},  # service_cost_per_hour{service,namespace}, cost_per_job{service,...}
    "gateway": {"service"},
}


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("monitor", sorted(EXPORTED_LABELS))
def test_service_monitors_honor_the_exporters_service_label(rendered, target, monitor):
    sm = one(rendered, target, "ServiceMonitor", monitor)
    clash = EXPORTED_LABELS[monitor] & TARGET_LABELS
    for endpoint in sm["spec"]["endpoints"]:
        assert endpoint.get("honorLabels") is True, (
            f"{target}: ServiceMonitor {monitor} would rename {sorted(clash)} to exported_* and put the "
            f"Kubernetes Service's name in `service` (BudgetThresholdExceeded for service=\"{monitor}\")")


# ---- item 12: one generated Redis password in the Secret and in the workers' URL ----

@pytest.mark.parametrize("target", TARGETS)
def test_redis_secret_url_carries_the_secrets_password(rendered, target):
    r = rendered[target]
    secret = one(rendered, target, "Secret", "redis-auth")["stringData"]
    password = secret["password"]
    assert len(password) == 40 and password.isalnum(), "generated: 40 letters and digits (roles/queue defaults)"
    # Workers read `url` (secretKeyRef key url), Redis reads `password` (--requirepass): they must agree.
    assert secret["url"] == f"redis://:{password}@redis.{r['namespace']}.svc:6379/0"
    statefulset = one(rendered, target, "StatefulSet", "redis")
    env = statefulset["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "redis-auth", "key": "password"}}} in env


def test_redis_password_is_not_in_the_repository(rendered):
    """Generated per run, never a constant: two renderings give two passwords."""
    passwords = {one(rendered, t, "Secret", "redis-auth")["stringData"]["password"] for t in TARGETS}
    assert len(passwords) == len(TARGETS)
    for path in (REPO / "roles/queue").rglob("*"):
        if path.is_file():
            assert not passwords & set(path.read_text().split()), path


def test_an_existing_redis_secret_is_kept(tmp_path):
    """A second run finds the Secret (main.yml's k8s_info) and renders none: the password is generated once."""
    import json

    existing = {"__queue_secret": {"resources": [{"metadata": {"name": "redis-auth"}}]}}
    r = ansible_playbook("-i", "inventories/gke", "tests/targets/render.yml", "-e", f"render_out={tmp_path}",
                         "-e", json.dumps(existing))
    assert r.returncode == 0, r.stdout[-3000:]
    rendering = json.loads((tmp_path / "controller.json").read_text())
    names = [(o["kind"], o["metadata"]["name"]) for o in rendering["objects"]]
    assert ("Secret", "redis-auth") not in names and ("StatefulSet", "redis") in names


# ---- item 1: the minimum is there before the HPA, and a re-run keeps the HPA's count ----

@pytest.mark.parametrize("target", TARGETS)
def test_worker_deployments_are_created_at_the_hpa_minimum(rendered, target):
    """model_services waits for readyReplicas >= hpa.min before autoscaling creates the HPA: a Deployment
    without replicas starts at 1 and that wait would time out for every service with min >= 2."""
    for svc in rendered[target]["services"]:
        deployment = one(rendered, target, "Deployment", svc["name"])
        assert deployment["spec"].get("replicas") == svc["hpa"]["min"], svc["name"]


@pytest.mark.parametrize("target", TARGETS)
def test_a_worker_is_not_pid_1_so_a_crash_can_reach_it(rendered, target):
    """The chaos scenario's kill_worker execs `kill -KILL -1` in the worker container (loadtests/faults.py). In a
    container's own PID namespace the worker is PID 1, and the kernel drops signals without a handler sent to it
    from inside, SIGKILL included (pid_namespaces(7)): the fault did nothing. With the pod's namespace shared, the
    pause container is PID 1 and the worker an ordinary process, on every target."""
    for svc in rendered[target]["services"]:
        spec = one(rendered, target, "Deployment", svc["name"])["spec"]["template"]["spec"]
        assert spec.get("shareProcessNamespace") is True, svc["name"]
        assert [c["name"] for c in spec["containers"]] == ["worker"], "kill -1 would reach a sidecar too"


def test_a_rerun_keeps_the_replica_count_the_hpa_set(tmp_path):
    import json

    live = {"__model_services_deployments": {"resources": [
        {"metadata": {"name": "stt"}, "spec": {"replicas": 7}}]}}
    r = ansible_playbook("-i", "inventories/eks", "tests/targets/render.yml", "-e", f"render_out={tmp_path}",
                         "-e", json.dumps(live))
    assert r.returncode == 0, r.stdout[-3000:]
    rendering = json.loads((tmp_path / "controller.json").read_text())
    deployments = {o["metadata"]["name"]: o for o in rendering["objects"] if o["kind"] == "Deployment"}
    assert deployments["stt"]["spec"]["replicas"] == 7, "the HPA's count is written back, not reset"
    tts = next(s for s in rendering["services"] if s["name"] == "tts")
    assert deployments["tts"]["spec"]["replicas"] == tts["hpa"]["min"], "a new Deployment starts at its minimum"


# ---- item 2: DCGM series keep the workload's pod labels, matched the way each device plugin names GPUs ----

def _inventory_device_plugin(target):
    """harness_gpu_device_plugin as the inventory sets it (GKE only; the other targets use the operator's)."""
    path = REPO / "inventories" / target / "group_vars/all" / f"{target}.yml"
    data = yaml.safe_load(path.read_text()) if path.is_file() else {}
    return (data or {}).get("harness_gpu_device_plugin", "gke" if target == "gke" else "operator")


@pytest.mark.parametrize("target", TARGETS)
def test_dcgm_exporter_labels_reach_the_adapter_as_the_workloads(rendered, target):
    dcgm = rendered[target]["gpu_operator_values"]["dcgmExporter"]
    # Without honorLabels the workload's pod/namespace become exported_pod/exported_namespace and the adapter's
    # DCGM_FI_DEV_GPU_UTIL{namespace!="",pod!=""} rule binds to the exporter pods: the HPA's GPU metric is empty.
    assert dcgm["serviceMonitor"]["honorLabels"] is True
    # Series without a workload (an idle GPU) must not inherit the exporter pod's target labels.
    dropped = [r for r in dcgm["serviceMonitor"]["relabelings"] if r["action"] == "labeldrop"]
    assert dropped and all(re.fullmatch(dropped[0]["regex"], label) for label in ("pod", "namespace", "container"))
    env = {e["name"]: e["value"] for e in dcgm["env"]}
    # The chart's own entries survive (Helm replaces lists): without DCGM_EXPORTER_KUBERNETES there are no pod labels.
    assert env["DCGM_EXPORTER_KUBERNETES"] == "true" and env["DCGM_EXPORTER_LISTEN"] == ":9400"
    assert env["DCGM_EXPORTER_COLLECTORS"]
    # GKE's device plugin reports device names (nvidia0/vgpu0) to the kubelet; NVIDIA's reports GPU UUIDs.
    expected_id_type = "device-name" if _inventory_device_plugin(target) == "gke" else "uid"
    assert env["DCGM_EXPORTER_KUBERNETES_GPU_ID_TYPE"] == expected_id_type
    sharing = any(p.get("time_slicing_replicas", 1) > 1 for p in rendered[target]["node_pools"])
    assert env["KUBERNETES_VIRTUAL_GPUS"] == ("true" if sharing else "false")


# ---- item 6 (and 4 on EKS): what each target's cluster lacks is installed, and can be skipped ----

def _eks_kubernetes_version():
    data = yaml.safe_load((REPO / "inventories/eks/group_vars/all/eks.yml").read_text())
    return tuple(int(x) for x in str(data["eks_cluster_kubernetes_version"]).split("."))


def test_eks_enforces_network_policies_with_the_vpc_cni_agent(rendered):
    import json

    addons = {a["addonName"]: a for a in rendered["eks"]["eks_addons"]}
    assert json.loads(addons["vpc-cni"]["configurationValues"]) == {"enableNetworkPolicy": "true"}
    assert addons["vpc-cni"]["resolveConflicts"] == "OVERWRITE", "EKS installs vpc-cni unmanaged: take it over"


def test_eks_gets_the_ebs_csi_driver_and_a_storage_class_for_redis(rendered):
    assert _eks_kubernetes_version() >= (1, 30), "EKS 1.30+ creates no default StorageClass"
    addons = {a["addonName"]: a for a in rendered["eks"]["eks_addons"]}
    assert {"aws-ebs-csi-driver", "eks-pod-identity-agent"} <= set(addons)
    assert addons["aws-ebs-csi-driver"]["podIdentityAssociations"][0]["serviceAccount"] == "ebs-csi-controller-sa"
    (sc,) = objects(rendered, "eks", "StorageClass")
    assert sc["provisioner"] == "ebs.csi.aws.com" and sc["volumeBindingMode"] == "WaitForFirstConsumer"
    assert sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"
    redis = one(rendered, "eks", "StatefulSet", "redis")
    assert redis["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"] == sc["metadata"]["name"]


def test_metrics_server_where_the_cluster_has_none(rendered):
    """The HPAs' CPU target needs metrics.k8s.io: GKE serves it, EKS and kubeadm clusters do not."""
    assert {t: rendered[t]["metrics_server"] for t in TARGETS} == {"gke": False, "eks": True, "self_managed": True}
    for target in ("gke", "self_managed"):
        assert not rendered[target]["eks_addons"] and not objects(rendered, target, "StorageClass")


def test_each_add_on_can_be_skipped(tmp_path):
    import json

    skip = {"cluster_addons_metrics_server": False, "cluster_addons_eks_network_policy": False,
            "cluster_addons_eks_ebs_csi_driver": False, "cluster_addons_storage_class": False}
    r = ansible_playbook("-i", "inventories/eks", "tests/targets/render.yml", "-e", f"render_out={tmp_path}",
                         "-e", json.dumps(skip))
    assert r.returncode == 0, r.stdout[-3000:]
    rendering = json.loads((tmp_path / "controller.json").read_text())
    assert rendering["eks_addons"] == [] and rendering["metrics_server"] is False
    assert not [o for o in rendering["objects"] if o["kind"] == "StorageClass"]


# ---- item 13: retention on storage, the ledger on a PVC, receivers from Secrets, Grafana, pipeline jobs ----

def _prometheus_stack_defaults():
    return yaml.safe_load((REPO / "roles/prometheus_stack/defaults/main.yml").read_text())


@pytest.mark.parametrize("target", TARGETS)
def test_prometheus_keeps_30_days_on_a_persistent_volume(rendered, target):
    spec = rendered[target]["prometheus_stack_values"]["prometheus"]["prometheusSpec"]
    assert spec["retention"] == "30d", "the seed platform keeps 30 days (issue 13)"
    claim = spec["storageSpec"]["volumeClaimTemplate"]["spec"]
    assert claim["resources"]["requests"]["storage"] == _prometheus_stack_defaults()["prometheus_stack_cluster_storage"]


@pytest.mark.parametrize("target", TARGETS)
def test_cost_ledger_is_on_a_persistent_volume(rendered, target):
    deployment = one(rendered, target, "Deployment", "cost-exporter")
    pod = deployment["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    ledger_dir = env["COST_EXPORTER_STATE_FILE"].rsplit("/", 1)[0]
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == ledger_dir)
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert "persistentVolumeClaim" in volume, f"{target}: the month-to-date ledger would be lost on restart: {volume}"
    claim = one(rendered, target, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    assert claim["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    assert deployment["spec"]["strategy"]["type"] == "Recreate", "one writer on a ReadWriteOnce volume"


@pytest.mark.parametrize("target", TARGETS)
def test_grafana_admin_password_is_generated_not_the_chart_default(rendered, target):
    grafana = rendered[target]["prometheus_stack_values"]["grafana"]
    assert "adminPassword" not in grafana, "no password in the values (the chart's default is prom-operator)"
    admin = grafana["admin"]
    secret = one(rendered, target, "Secret", admin["existingSecret"])
    assert secret["metadata"]["namespace"] == rendered[target]["monitoring_namespace"]
    password = secret["stringData"][admin["passwordKey"]]
    assert admin["userKey"] in secret["stringData"] and len(password) >= 32 and password.isalnum()


def test_alertmanager_receivers_read_slack_and_pagerduty_from_secrets(tmp_path):
    import json

    receivers = {"prometheus_stack_alert_slack": {"secret": "am-slack", "key": "url", "channel": "#alerts"},
                 "prometheus_stack_alert_pagerduty": {"secret": "am-pd", "key": "routing-key"}}
    r = ansible_playbook("-i", "inventories/gke", "tests/targets/render.yml", "-e", f"render_out={tmp_path}",
                         "-e", json.dumps(receivers))
    assert r.returncode == 0, r.stdout[-3000:]
    am = json.loads((tmp_path / "controller.json").read_text())["prometheus_stack_values"]["alertmanager"]
    assert sorted(am["alertmanagerSpec"]["secrets"]) == ["am-pd", "am-slack"]
    by_name = {rc["name"]: rc for rc in am["config"]["receivers"]}
    slack = by_name[am["config"]["route"]["receiver"]]["slack_configs"][0]
    assert slack["api_url_file"] == "/etc/alertmanager/secrets/am-slack/url" and slack["channel"] == "#alerts"
    assert "api_url" not in slack
    pager_route = next(rt for rt in am["config"]["route"]["routes"] if rt["receiver"] != "null")
    assert pager_route["matchers"] == ['severity = "critical"'] and pager_route["continue"] is True
    pager = by_name[pager_route["receiver"]]["pagerduty_configs"][0]
    assert pager["routing_key_file"] == "/etc/alertmanager/secrets/am-pd/routing-key" and "routing_key" not in pager


def _pipeline_regex(rendered, target):
    groups = rendered[target]["prometheus_stack_values"]["additionalPrometheusRulesMap"]["service-alerts"]["groups"]
    rule = next(r for g in groups for r in g["rules"] if r.get("alert") == "MetricsPipelineDown")
    return re.search(r'up\{job=~"([^"]+)"\}', rule["expr"]).group(1)


@pytest.mark.parametrize("target", TARGETS)
def test_metrics_pipeline_down_watches_the_jobs_this_target_has(rendered, target):
    """Job names as Prometheus will see them: our ServiceMonitors set job by relabeling; dcgm-exporter's
    ServiceMonitor (from the GPU Operator chart) gets the Prometheus Operator's default, its Service's name,
    nvidia-dcgm-exporter (NVIDIA's GPU Operator docs)."""
    jobs = {rl["replacement"] for sm in objects(rendered, target, "ServiceMonitor")
            for ep in sm["spec"]["endpoints"] for rl in ep.get("relabelings") or [] if rl.get("targetLabel") == "job"}
    wanted = {"queue-exporter", "cost-exporter", "nvidia-dcgm-exporter"}
    assert {"queue-exporter", "cost-exporter"} <= jobs
    regex = re.compile(f"^(?:{_pipeline_regex(rendered, target)})$")
    assert {j for j in wanted if regex.match(j)} == wanted, f"{target}: MetricsPipelineDown misses a job"
    assert not regex.match("gpu-exporter"), f"{target}: gpu-exporter exists only on the local target"


# ---- item 15: the custom resources the local apiserver cannot validate (their CRDs come with the charts) ----

# Field names of the Prometheus Operator's monitoring.coreos.com/v1 API (ServiceMonitor endpoints, RelabelConfig)
# as its API reference documents them. The CRD's structural schema drops unknown fields silently, so a
# Prometheus-style snake_case key (source_labels, target_label) would be lost without an error.
ENDPOINT_FIELDS = {"port", "targetPort", "path", "scheme", "interval", "scrapeTimeout", "honorLabels",
                   "honorTimestamps", "relabelings", "metricRelabelings", "params", "tlsConfig"}
RELABEL_FIELDS = {"sourceLabels", "separator", "targetLabel", "regex", "modulus", "replacement", "action"}
RELABEL_ACTIONS = {"replace", "keep", "drop", "hashmod", "labelmap", "labeldrop", "labelkeep", "lowercase",
                   "uppercase", "keepequal", "dropequal"}


@pytest.mark.parametrize("target", TARGETS)
def test_service_monitors_use_the_operators_field_names(rendered, target):
    endpoints = [ep for sm in objects(rendered, target, "ServiceMonitor") for ep in sm["spec"]["endpoints"]]
    endpoints.append(rendered[target]["gpu_operator_values"]["dcgmExporter"]["serviceMonitor"])
    for ep in endpoints[:-1]:
        assert set(ep) <= ENDPOINT_FIELDS, set(ep) - ENDPOINT_FIELDS
    for ep in endpoints:
        for rl in ep.get("relabelings", []) + ep.get("metricRelabelings", []):
            assert set(rl) <= RELABEL_FIELDS, f"{target}: unknown relabeling fields {set(rl) - RELABEL_FIELDS}"
            assert rl.get("action", "replace") in RELABEL_ACTIONS


@pytest.mark.parametrize("target", TARGETS)
def test_prometheus_rules_are_rule_groups(rendered, target):
    for rule_obj in objects(rendered, target, "PrometheusRule"):
        for group in rule_obj["spec"]["groups"]:
            assert set(group) <= {"name", "interval", "rules", "limit", "partial_response_strategy"}
            for rule in group["rules"]:
                assert ("alert" in rule) != ("record" in rule) and rule["expr"], rule
                assert set(rule) <= {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}


# ---- placement is a per-target variable: every pod of the stack follows harness_pod_node_selector/tolerations ----

STACK_WORKLOADS = {("StatefulSet", "redis"), ("Deployment", "gateway"), ("Deployment", "queue-exporter"),
                   ("Deployment", "cost-exporter")}


def _pod_specs(rendering):
    return {(o["kind"], o["metadata"]["name"]): o["spec"]["template"]["spec"] for o in rendering["objects"]
            if o["kind"] in ("Deployment", "StatefulSet") and o["metadata"]["namespace"] == rendering["namespace"]}


def test_the_clouds_place_the_stack_by_the_gpu_label_only(rendered):
    """Cloud inventories set no stack-wide placement: Redis, the gateway and the exporters go wherever the cluster's
    CPU pools take them, and the workers by the GPU label GPU feature discovery publishes (documented in
    docs/targets.md)."""
    for target in TARGETS:
        specs = _pod_specs(rendered[target])
        assert set(specs) >= STACK_WORKLOADS, sorted(specs)
        for key in STACK_WORKLOADS:
            assert "nodeSelector" not in specs[key] and "tolerations" not in specs[key], (target, key, specs[key])
        for svc in rendered[target]["services"]:
            assert specs[("Deployment", svc["name"])]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}


def test_pod_placement_variables_reach_every_pod_of_the_stack(tmp_path):
    """The local real node's placement (its label, and its GPU taint tolerated) is variables, not a fork: rendered
    for self_managed with them set, every workload carries them, the workers beside their GPU selector."""
    selector = {"harness.local/real-node": "true"}
    toleration = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    extra = {"harness_pod_node_selector": selector, "harness_pod_tolerations": [toleration],
             "model_services_worker_resources": {"cpu": "100m"}}
    r = ansible_playbook("-i", "inventories/self_managed", "tests/targets/render.yml", "-e", f"render_out={tmp_path}",
                         "-e", json.dumps(extra))
    assert r.returncode == 0, r.stdout[-3000:]
    rendering = json.loads((tmp_path / "controller.json").read_text())
    specs = _pod_specs(rendering)
    for key in STACK_WORKLOADS:
        assert specs[key]["nodeSelector"] == selector and specs[key]["tolerations"] == [toleration], (key, specs[key])
    for svc in rendering["services"]:
        spec = specs[("Deployment", svc["name"])]
        assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true", **selector}, spec["nodeSelector"]
        requests = spec["containers"][0]["resources"]["requests"]
        assert requests == {"cpu": "100m", "memory": svc["resources"]["memory"]}, requests


def test_the_stacks_service_monitors_scrape_at_the_profiles_interval(rendered):
    """The HPA reads metrics no older than the profile's scrape interval (harness_profiles, which the load-test judge
    and the local Prometheus use): the ServiceMonitors of the workers, gateway and exporters scrape at it."""
    profiles = yaml.safe_load((REPO / "roles/harness/defaults/main.yml").read_text())["harness_profiles"]
    for target in TARGETS:
        inventory = {}
        for f in sorted((REPO / "inventories" / target / "group_vars/all").glob("*.yml")):
            inventory.update(yaml.safe_load(f.read_text()) or {})
        interval = profiles[inventory.get("harness_profile", "standard")]["scrape_interval"]
        monitors = [o for o in objects(rendered, target, "ServiceMonitor")
                    if o["metadata"]["namespace"] == rendered[target]["namespace"]]
        assert len(monitors) >= 4, monitors
        for m in monitors:
            assert {e["interval"] for e in m["spec"]["endpoints"]} == {interval}, (target, m["metadata"]["name"])
