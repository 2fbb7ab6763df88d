"""Every Kubernetes object the gke, eks and self_managed targets would apply, submitted to the local target's real
kube-apiserver with dryRun=All (server-side apply): the apiserver's own validation and admission, zero rejections.
The objects are what the roles' tasks/manifests.yml render (tests/targets/render.yml): the GPU Operator's namespace
and quota, the time-slicing ConfigMap, the monitoring namespace and dashboards, the services namespace, Redis and
its Secret, the model services (Deployment, Service, PodDisruptionBudget, NetworkPolicy), the gateway, the queue
and cost exporters with their RBAC and config, the NetworkPolicies, the HPAs, prometheus-adapter (RBAC, Deployment,
APIServices), and the self-managed Node objects.
test_cluster_manifests.py checks that the roles apply nothing else.

Not covered here, and why:
- The Helm releases (GPU Operator, kube-prometheus-stack): the charts cannot be fetched in this
  environment, so their manifests cannot be rendered; test_rendered.py and test_cluster_manifests.py check the
  values passed to them instead.
- Custom resources whose CRDs ship with those charts (ServiceMonitor, PrometheusRule, ClusterPolicy): reported as
  not validated server-side when a role renders one; no CRD is faked to make them pass.
"""

import uuid

import pytest
from conftest import TARGETS
from kubernetes.dynamic.exceptions import ApiException, ResourceNotFoundError

FIELD_MANAGER = "gpu-serving-harness-dry-run"


def dry_run_namespace(name: str) -> str:
    """Where a namespaced object is dry-run: a namespace of the test's own, so that the apiserver judges a create, as
    on the bare cluster the playbooks start from. In the object's own namespace an object the running stack already
    has is judged as an update instead (a StatefulSet whose volume claims name another storage class is refused as
    an update of immutable fields: seen with the stack on the local real node, whose Redis has one)."""
    return f"dry-run-{name}"[:63]


@pytest.fixture(scope="module")
def namespaces(dynamic_client, rendered):
    """Namespaced objects are admitted only into existing namespaces: create the test's namespaces for real
    (labelled), and delete only those afterwards."""
    ns_api = dynamic_client.resources.get(api_version="v1", kind="Namespace")
    wanted = {
        dry_run_namespace(o["metadata"]["namespace"])
        for t in TARGETS for o in rendered[t]["objects"] if o["metadata"].get("namespace")
    }
    existing = {n.metadata.name for n in ns_api.get().items}
    made = sorted(wanted - existing)
    for name in made:
        ns_api.create(body={"apiVersion": "v1", "kind": "Namespace",
                            "metadata": {"name": name, "labels": {"gpu-serving-harness/test": "targets-dry-run"}}})
    yield wanted
    for name in made:
        ns_api.delete(name=name)


@pytest.mark.parametrize("target", TARGETS)
def test_objects_pass_server_side_dry_run(target, rendered, dynamic_client, namespaces):
    objects = rendered[target]["objects"] + rendered[target]["nodes"]
    assert objects, f"{target} renders no objects"
    rejected, not_validated, accepted = [], [], []
    for obj in objects:
        ident = f"{obj['kind']}/{obj['metadata'].get('namespace', '')}/{obj['metadata']['name']}"
        try:
            api = dynamic_client.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        except ResourceNotFoundError:
            not_validated.append(
                f"{ident}: no {obj['apiVersion']} {obj['kind']} on this apiserver (CRD ships with a chart)"
            )
            continue
        namespace = obj["metadata"].get("namespace")
        if namespace:
            obj = {**obj, "metadata": {**obj["metadata"], "namespace": dry_run_namespace(namespace)}}
        try:
            api.server_side_apply(body=obj, name=obj["metadata"]["name"], namespace=obj["metadata"].get("namespace"),
                                  field_manager=FIELD_MANAGER, force_conflicts=True, dry_run="All")
            accepted.append(ident)
        except ApiException as exc:
            rejected.append(f"{ident}: {exc.status} {exc.reason}: {exc.body}")
    print(f"\n{target}: {len(accepted)} accepted by dry run: {accepted}")
    if not_validated:
        print(f"{target}: NOT validated server-side: {not_validated}")
    assert not rejected, f"{target}: the apiserver rejected:\n" + "\n".join(rejected)


def test_dry_run_rejects_a_broken_object(dynamic_client, namespaces):
    """The check above can fail: an invalid taint effect is rejected by the same call."""
    api = dynamic_client.resources.get(api_version="v1", kind="Node")
    name = f"dry-run-check-{uuid.uuid4().hex[:6]}"
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
            "spec": {"taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSuchEffect"}]}}
    with pytest.raises(ApiException) as exc:
        api.server_side_apply(body=node, name=name, field_manager=FIELD_MANAGER, force_conflicts=True, dry_run="All")
    assert exc.value.status == 422
