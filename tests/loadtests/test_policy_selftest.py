"""The policy judge's self-test: the real HPA controller of the local stack runs the table's policy and five
deliberately wrong ones against a scripted backlog, and the judge (loadtests/envelope.py) must pass the first
and fail each of the others naming its rule.

Nothing here touches the stack's services. Everything lives in a namespace of its own: six Deployments of no-op
pods on the simulated system node (kwok marks them Running and nothing executes them; no GPU is requested, so the
services' GPU slots stay free), six HPAs
with only the queue-depth metric, and six queues that no worker consumes, which the queue exporter exports
because the local inventory lists them (``model_services_queue_exporter_extra_queues``). The backlog is pushed
straight into the queues with BullMQ (no Locust, no gateway); all six run at once, since each has its own
queue, Deployment and HPA, and the controller keeps each HPA's history apart.

The judge takes the policy from the inventory, never from these HPAs, and the metric from Redis itself, so
the reaction budget covers the whole path: Redis -> exporter -> Prometheus -> adapter -> HPA.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import json
import os
import threading
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import yaml

from loadtests.apiproxy import PodPortRelay, cluster_service, with_address
from loadtests.envelope import Policy, RatePolicy, Rules, judge, policy_from_inventory
from tests.e2e import stack

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
STATE = Path(os.environ.get("HARNESS_STATE_DIR") or Path.home() / ".local/state/gpu-serving-harness/local")
INVENTORY = ROOT / "inventories/local"
GROUP_VARS = yaml.safe_load((INVENTORY / "group_vars/all/loadtests.yml").read_text())
NAMESPACE = GROUP_VARS["loadtest_policy_selftest_namespace"]
QUEUES = [q.split(":")[0] for q in GROUP_VARS["model_services_queue_exporter_extra_queues"]]
SERVICES_NAMESPACE = "model-serving"
JOBS = 100  # ceil(100 / 5) = 20 replicas asked for: every HPA is driven to its maximum
HOLD_S = 45.0  # the backlog stays this long: the slowest wrong policy (1 pod / 6 s) needs 36 s to reach 8
OBSERVE_S = 70.0  # after the drain: 30 s window + two 12 s periods + the metric's lag and margin
SAMPLE_S = 0.5

TABLE, TIMING = policy_from_inventory("stt", INVENTORY)


def variants() -> dict[str, tuple[Policy, str | None]]:
    """Name -> (the HPA to run, the rule the judge must name; None: must pass)."""
    up, down = TABLE.up, TABLE.down
    period = up.policies[0].period_s
    return {
        "table": (TABLE, None),
        "pods-1": (replace(TABLE, up=replace(up, policies=(RatePolicy("Pods", 1, period),))), "scale_up_late"),
        "percent-10": (
            replace(TABLE, up=replace(up, policies=(RatePolicy("Percent", 10, period),))),
            "scale_up_late",
        ),
        "select-min": (replace(TABLE, up=up.flipped(), down=down.flipped()), "select_policy"),
        "stabilization-0": (replace(TABLE, down=replace(down, stabilization_s=0)), "scale_down_stabilization"),
        "max-2": (replace(TABLE, max_replicas=2), "max_replicas"),
    }


def _behavior(rules: Rules) -> dict:
    return {
        "stabilizationWindowSeconds": int(rules.stabilization_s),
        "selectPolicy": rules.select,
        "policies": [{"type": p.type, "value": p.value, "periodSeconds": int(p.period_s)} for p in rules.policies],
    }


def hpa_manifest(name: str, queue: str, policy: Policy) -> dict:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": policy.min_replicas,
            "maxReplicas": policy.max_replicas,
            "metrics": [
                {
                    "type": "External",
                    "external": {
                        "metric": {"name": "redis_queue_depth", "selector": {"matchLabels": {"queue_name": queue}}},
                        "target": {"type": "AverageValue", "averageValue": f"{policy.target_per_pod:g}"},
                    },
                }
            ],
            "behavior": {"scaleUp": _behavior(policy.up), "scaleDown": _behavior(policy.down)},
        },
    }


def deployment_manifest(name: str, replicas: int) -> dict:
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "policy-selftest"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    # The simulated system node: kwok runs the pod, nothing executes it.
                    "nodeSelector": {"harness.local/pool": "system", "harness.local/simulated": "true"},
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{"name": "noop", "image": "registry.k8s.io/pause:3.10"}],
                },
            },
        },
    }


class Recorder(threading.Thread):
    """Every SAMPLE_S: each Deployment's spec.replicas (what its HPA set) and each queue's depth in Redis."""

    def __init__(self, apps, autoscaling, redis, names: dict[str, str]) -> None:
        super().__init__(daemon=True, name="policy-selftest-recorder")
        self.apps, self.autoscaling, self.redis, self.names = apps, autoscaling, redis, names
        self.replicas: dict[str, list[tuple[float, int]]] = {n: [] for n in names}
        self.depth: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
        self.desired: dict[str, list[tuple[float, int | None]]] = {n: [] for n in names}
        self.errors: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            started = time.monotonic()
            try:
                pipe = self.redis.pipeline()
                for queue in self.names.values():
                    pipe.llen(f"bull:{queue}:wait")
                depths = pipe.execute()
                now = time.time()
                deps = {d.metadata.name: d for d in self.apps.list_namespaced_deployment(NAMESPACE).items}
                hpas = {
                    h.metadata.name: h
                    for h in self.autoscaling.list_namespaced_horizontal_pod_autoscaler(NAMESPACE).items
                }
                for (name, obj), depth in zip(self.names.items(), depths, strict=True):
                    self.depth[name].append((now, float(depth)))
                    if obj in deps:  # the Deployment, HPA and queue share one name
                        self.replicas[name].append((now, int(deps[obj].spec.replicas or 0)))
                    if obj in hpas and hpas[obj].status is not None:
                        self.desired[name].append((now, hpas[obj].status.desired_replicas))
            except Exception as exc:  # a failed read is a gap, named in the failure message
                self.errors.append(f"{time.time():.1f} {type(exc).__name__}: {exc}")
            self.halt.wait(max(0.0, SAMPLE_S - (time.monotonic() - started)))


def _redis_url(core) -> str:
    """The stack's Redis URL (its Secret); a Service's cluster DNS name is relayed through the API server
    (pods/portforward to a Ready pod behind it, as the load-test checker reads it), until the tests end."""
    secret = core.read_namespaced_secret("redis-auth", SERVICES_NAMESPACE)
    url = base64.b64decode(secret.data["url"]).decode()
    internal = cluster_service(url)
    if internal is None:
        return url
    relay = PodPortRelay.for_service(core, *internal)
    atexit.register(relay.stop)
    return with_address(url, *relay.address)


async def _push(url: str, queues: list[str]) -> None:
    from bullmq import Queue

    for name in queues:
        queue = Queue(name, {"connection": url, "prefix": "bull"})
        await queue.addBulk([{"name": "policy-selftest", "data": {"i": i}} for i in range(JOBS)])
        await queue.close()


async def _obliterate(url: str, queues: list[str]) -> None:
    from bullmq import Queue

    for name in queues:
        queue = Queue(name, {"connection": url, "prefix": "bull"})
        await queue.obliterate({"force": True})
        await queue.close()


def _wait(what: str, check, timeout: float, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last is True:
            return
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}: {last}")


@pytest.fixture(scope="module")
def cluster():
    kubeconfig = STATE / "kubeconfig"
    if not kubeconfig.is_file():
        pytest.skip(f"no kubeconfig under {STATE}: the local stack is not up")
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=str(kubeconfig))
    try:
        client.VersionApi(api).get_code(_request_timeout=5)
    except Exception as exc:
        pytest.skip(f"the local apiserver does not answer: {exc}")
    return api


def test_the_judge_fails_each_wrong_policy_by_name_and_passes_the_table(cluster, tmp_path):
    import redis
    from kubernetes import client, utils
    from kubernetes.client.rest import ApiException

    began = time.time()
    core, apps = client.CoreV1Api(cluster), client.AppsV1Api(cluster)
    autoscaling = client.AutoscalingV2Api(cluster)

    # The judge reads the inventory the way roles/autoscaling renders it: check against the live stt HPA.
    live = cluster.sanitize_for_serialization(
        autoscaling.read_namespaced_horizontal_pod_autoscaler("stt", SERVICES_NAMESPACE)
    )["spec"]
    ours = hpa_manifest("stt", "stt", TABLE)["spec"]
    for direction in ("scaleUp", "scaleDown"):
        got, want = live["behavior"][direction], ours["behavior"][direction]
        assert got["stabilizationWindowSeconds"] == want["stabilizationWindowSeconds"], direction
        assert got["selectPolicy"] == want["selectPolicy"], direction
        def canon(policies: list[dict]) -> list[str]:
            return sorted(json.dumps(p, sort_keys=True) for p in policies)

        assert canon(got["policies"]) == canon(want["policies"]), (direction, got, want)
    assert (live["minReplicas"], live["maxReplicas"]) == (TABLE.min_replicas, TABLE.max_replicas)

    # The queue exporter must export the self-test's queues (inventory: model_services_queue_exporter_extra_queues).
    found = httpx.get(
        f"{stack.url('prometheus')}/api/v1/query",
        params={"query": 'count by (queue_name) (redis_queue_depth{queue_type="policy-selftest"})'},
        timeout=10,
    ).json()["data"]["result"]
    missing = sorted(set(QUEUES) - {r["metric"]["queue_name"] for r in found})
    assert not missing, (
        f"Prometheus has no redis_queue_depth for {missing}: the queue exporter does not export the self-test's "
        "queues; run site.yml with this inventory (model_services_queue_exporter_extra_queues)"
    )

    url = _redis_url(core)
    rds = redis.Redis.from_url(url)
    cases = variants()
    names = {name: f"policy-selftest-{name}" for name in cases}
    assert sorted(names.values()) == sorted(QUEUES)

    # A namespace left over from an interrupted run goes first.
    try:
        core.delete_namespace(NAMESPACE)
    except ApiException as exc:
        if exc.status != 404:
            raise

    def namespace_gone():
        try:
            core.read_namespace(NAMESPACE)
        except ApiException as exc:
            return exc.status == 404 or f"HTTP {exc.status}"
        return "still terminating"

    _wait(f"namespace {NAMESPACE} from an earlier run to go", namespace_gone, 120)
    asyncio.run(_obliterate(url, list(names.values())))
    recorder = Recorder(apps, autoscaling, rds, names)
    try:
        core.create_namespace(
            client.V1Namespace(
                metadata=client.V1ObjectMeta(name=NAMESPACE, labels={"app.kubernetes.io/part-of": "policy-selftest"})
            )
        )
        for name, (policy, _) in cases.items():
            utils.create_from_dict(cluster, deployment_manifest(names[name], TABLE.min_replicas))
            utils.create_from_dict(cluster, hpa_manifest(names[name], names[name], policy))

        def at_rest():
            hpas = autoscaling.list_namespaced_horizontal_pod_autoscaler(NAMESPACE).items
            deps = {d.metadata.name: d for d in apps.list_namespaced_deployment(NAMESPACE).items}
            waiting = []
            for h in hpas:
                conds = {c.type: c.status for c in (h.status.conditions or [])}
                dep = deps.get(h.metadata.name)
                if not (
                    conds.get("ScalingActive") == "True"
                    and h.status.current_metrics
                    and h.status.desired_replicas == TABLE.min_replicas
                    and dep is not None
                    and (dep.status.ready_replicas or 0) == TABLE.min_replicas
                ):
                    waiting.append(f"{h.metadata.name}: {conds}, desired {h.status.desired_replicas}")
            return True if len(hpas) == len(cases) and not waiting else waiting or "no HPAs yet"

        _wait("every self-test HPA to read its metric and hold its minimum", at_rest, 120)
        recorder.start()
        time.sleep(4 * SAMPLE_S + TIMING.sync_s)  # a baseline before the backlog
        t_push = time.time()
        asyncio.run(_push(url, list(names.values())))
        time.sleep(max(0.0, t_push + HOLD_S - time.time()))
        t_drain = time.time()
        asyncio.run(_obliterate(url, list(names.values())))
        time.sleep(max(0.0, t_drain + OBSERVE_S - time.time()))
    finally:
        recorder.halt.set()
        if recorder.is_alive():
            recorder.join(timeout=10)
        try:
            asyncio.run(_obliterate(url, list(names.values())))
        finally:
            try:
                core.delete_namespace(NAMESPACE)
            except ApiException as exc:
                if exc.status != 404:
                    raise

    verdicts = {}
    for name, (_policy, _) in cases.items():
        # The judge gets the inventory's table policy for every one: the wrong HPAs must not vouch for themselves.
        verdicts[name] = judge(TABLE, TIMING, recorder.replicas[name], recorder.depth[name], t_origin=t_push)
    record = {
        "run_s": round(time.time() - began, 1),
        "push_at": t_push,
        "drain_after_s": round(t_drain - t_push, 1),
        "recorder_errors": recorder.errors[:5],
        "verdicts": {name: v.to_json() | {"observed": recorder.replicas[name]} for name, v in verdicts.items()},
    }
    (tmp_path / "policy-selftest.json").write_text(json.dumps(record, indent=1, default=str))
    print(f"policy self-test: {record['run_s']} s; record in {tmp_path / 'policy-selftest.json'}")

    def show(name: str) -> str:
        v = verdicts[name]
        steps = []
        for t, r in recorder.replicas[name]:
            if not steps or steps[-1][1] != r:
                steps.append((round(t - t_push, 1), r))
        return f"{name}: rules {v.rules}, findings {[f.to_json() for f in v.findings][:3]}, replicas {steps}"

    assert len(recorder.errors) < 10, recorder.errors[:5]
    assert all(len(recorder.replicas[n]) > 100 for n in cases), {n: len(r) for n, r in recorder.replicas.items()}
    for name, (_, rule) in cases.items():
        v = verdicts[name]
        if rule is None:
            assert v.passed, show(name)
        else:
            assert not v.passed, show(name)
            assert v.rules[0] == rule, show(name)
