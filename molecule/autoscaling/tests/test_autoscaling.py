"""roles/autoscaling on the stack: one HPA per enabled service, as the inventory's table and profile say, and the
real HPA controller acting on it."""

from __future__ import annotations

import pytest

from loadtests import inventory as inventory_facts
from tests.e2e import kube_checks as k
from tests.e2e import stack

SERVICES = stack.SERVICES
FACTS = inventory_facts.facts()
# The profile divides the table's periods (roles/harness: harness_profiles[...].time_scale).
TIME_SCALE = FACTS["harness_profiles"][FACTS["harness_profile"]]["time_scale"]
# Whether the HPAs carry the CPU metric: the inventory's autoscaling_cpu_metric (the local one turns it off: 50m
# requests make CPU utilisation meaningless there), else the role's default.
CPU_METRIC = bool(FACTS.get("autoscaling_cpu_metric", k.defaults("autoscaling")["autoscaling_cpu_metric"]))
METRIC_TYPES = ["External", "Pods"] + (["Resource"] if CPU_METRIC else [])


def scaled(seconds: int) -> int:
    return round(seconds / TIME_SCALE)


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_each_hpa_follows_the_service_table(name):
    svc, hpa = SERVICES[name], k.autoscaling().read_namespaced_horizontal_pod_autoscaler(name, k.namespace())
    spec, table = hpa.spec, SERVICES[name]["hpa"]
    assert spec.scale_target_ref.name == name
    assert (spec.min_replicas, spec.max_replicas) == (table["min"], table["max"])
    assert [m.type for m in spec.metrics] == METRIC_TYPES
    external, pods = spec.metrics[:2]
    assert external.external.metric.name == "redis_queue_depth"
    assert external.external.metric.selector.match_labels == {"queue_name": svc["queue"]}
    assert int(external.external.target.average_value) == table["queue_depth_per_pod"]
    assert pods.pods.metric.name == "DCGM_FI_DEV_GPU_UTIL"
    assert int(pods.pods.target.average_value) == table["gpu_util_percent"]
    if CPU_METRIC:
        resource = spec.metrics[2].resource
        assert resource.name == "cpu" and resource.target.average_utilization == table["cpu_percent"]
    up, down = spec.behavior.scale_up.policies, spec.behavior.scale_down.policies
    assert [p.value for p in up if p.type == "Pods"] == [table["scale_up"]["pods"]]
    assert {p.period_seconds for p in up} == {scaled(table["scale_up"]["period_seconds"])}
    assert [p.value for p in down if p.type == "Percent"] == [table["scale_down"]["percent"]]
    assert {p.period_seconds for p in down} == {scaled(table["scale_down"]["period_seconds"])}


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_the_controller_reads_every_metric_and_holds_the_minimum_with_ready_pods(name):
    low = SERVICES[name]["hpa"]["min"]

    def at_rest():
        hpa = k.autoscaling().read_namespaced_horizontal_pod_autoscaler(name, k.namespace())
        dep = k.apps().read_namespaced_deployment(name, k.namespace())
        conds = {c.type: c.status for c in hpa.status.conditions or []}
        current = hpa.status.current_metrics or []
        ok = (conds.get("AbleToScale") == "True" and conds.get("ScalingActive") == "True"
              and len(current) == len(METRIC_TYPES)
              and dep.spec.replicas == low and (dep.status.ready_replicas or 0) == low)
        return (hpa, dep) if ok else None

    what = f"HPA {name}: able to scale, active, {len(METRIC_TYPES)} metrics read, {low} ready"
    hpa, _ = stack.wait_for(what, at_rest, timeout=180, interval=3)
    external, pods = hpa.status.current_metrics[:2]
    assert external.external.current.average_value is not None
    assert pods.pods.current.average_value is not None
