"""roles/harness' filters: the arithmetic the roles' Jinja did inline, now one tested function each.

The HPA behavior is rendered by roles/autoscaling with harness_hpa_behavior and judged by loadtests/envelope.py
with the same function, so the last test renders the real template through Ansible and compares.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from loadtests import inventory as inventory_facts
from loadtests.envelope import policy_from_inventory

REPO = Path(__file__).resolve().parents[2]
harness = inventory_facts.filters()

# The seed platform's policy for stt (shared DESIGN): up 100 % or 2 pods per 60 s, down 50 % or 1 pod per 120 s.
STT_HPA = {
    "min": 2,
    "max": 8,
    "scale_up": {"percent": 100, "pods": 2, "period_seconds": 60},
    "scale_down": {"percent": 50, "pods": 1, "period_seconds": 120},
}


def test_the_table_policy_on_the_fast_profile():
    assert harness.hpa_behavior(STT_HPA, 10) == {
        "scaleUp": {
            "stabilizationWindowSeconds": 0,
            "selectPolicy": "Max",
            "policies": [
                {"type": "Percent", "value": 100, "periodSeconds": 6},
                {"type": "Pods", "value": 2, "periodSeconds": 6},
            ],
        },
        # Kubernetes' default scale-down window (300 s) when the table names none, divided by 10.
        "scaleDown": {
            "stabilizationWindowSeconds": 30,
            "selectPolicy": "Max",
            "policies": [
                {"type": "Percent", "value": 50, "periodSeconds": 12},
                {"type": "Pods", "value": 1, "periodSeconds": 12},
            ],
        },
    }


def test_standard_profile_keeps_the_table_values():
    b = harness.hpa_behavior(STT_HPA, 1)
    assert [p["periodSeconds"] for p in b["scaleUp"]["policies"]] == [60, 60]
    assert b["scaleDown"]["stabilizationWindowSeconds"] == 300


@pytest.mark.parametrize(
    ("seconds", "scale", "minimum", "expected"),
    [(45, 10, 0, 5), (35, 10, 0, 4), (25, 10, 0, 3), (4, 10, 1, 1), (0, 10, 0, 0), (90, 1, 0, 90)],
)
def test_scaling_rounds_half_up(seconds, scale, minimum, expected):
    # Jinja's round (Python's, half to even) gave 4 for 45 / 10 and 2 for 25 / 10 while the judge gave 5 and 3.
    assert harness.scaled_seconds(seconds, scale, minimum) == expected


@pytest.mark.parametrize(
    ("hpa", "scale", "message"),
    [
        ({"scale_up": {"pods": 2}, "scale_down": STT_HPA["scale_down"]}, 10,
         "hpa.scale_up: period_seconds is required"),
        ({"scale_up": {"period_seconds": 60}, "scale_down": STT_HPA["scale_down"]}, 10, "give percent, pods or both"),
        ({"scale_up": "fast", "scale_down": STT_HPA["scale_down"]}, 10, "hpa.scale_up='fast'"),
        ({"scale_up": {"pods": "2", "period_seconds": 60}, "scale_down": STT_HPA["scale_down"]}, 10,
         "hpa.scale_up.pods='2': a number is required"),
        (STT_HPA, 0, "time_scale=0: must be > 0"),
        (STT_HPA, "ten", "time_scale='ten': a number is required"),
    ],
)
def test_bad_policies_are_named(hpa, scale, message):
    with pytest.raises(harness.HarnessFilterError, match=message.replace("(", r"\(").replace(".", r"\.")):
        harness.hpa_behavior(hpa, scale)


def test_service_arguments_and_queue_map():
    services = [{"name": "stt", "queue": "stt-gpu"}, {"name": "tts"}]
    assert harness.service_args(services) == ["--service=stt:stt-gpu", "--service=tts:tts"]
    assert harness.queue_map(services) == "stt-gpu:stt,tts:tts"
    with pytest.raises(harness.HarnessFilterError, match="a mapping with name"):
        harness.service_args([{"queue": "x"}])


def test_the_rendered_hpa_is_what_the_judge_holds_it_to(tmp_path):
    """The real template rendered by Ansible for a policy whose fast periods fall on .5 (45 s / 10, 25 s / 10),
    against the policy the load-test judge computes for the same inventory."""
    inventory = tmp_path / "inventory"
    (inventory / "group_vars" / "all").mkdir(parents=True)
    table = inventory_facts.services(REPO / "inventories" / "local", enabled_only=False)
    table[0]["hpa"]["scale_up"] = {"pods": 2, "period_seconds": 45}
    table[0]["hpa"]["scale_down"] = {"percent": 50, "period_seconds": 25, "stabilization_seconds": 65}
    for path in (REPO / "inventories" / "local" / "group_vars" / "all").glob("*.yml"):
        (inventory / "group_vars" / "all" / path.name).write_text(path.read_text())
    (inventory / "group_vars" / "all" / "services.yml").write_text(yaml.safe_dump({"harness_services": table}))
    (inventory / "hosts.yml").write_text((REPO / "inventories" / "local" / "hosts.yml").read_text())
    playbook = tmp_path / "render.yml"
    out = tmp_path / "hpas.json"
    playbook.write_text(yaml.safe_dump([{
        "name": "Render the HPAs", "hosts": "controller", "gather_facts": False,
        "tasks": [
            {"name": "Render", "ansible.builtin.include_role": {"name": "autoscaling", "tasks_from": "manifests.yml"}},
            {"name": "Write", "ansible.builtin.copy": {"dest": str(out), "mode": "0600",
                                                       "content": "{{ __autoscaling_manifests | to_json }}"}},
        ],
    }]))
    env = {"ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
           "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin", "HOME": str(Path.home())}
    run = subprocess.run(
        [str(Path(sys.executable).with_name("ansible-playbook")), "-i", str(inventory), str(playbook)],
        capture_output=True, text=True, env=env, timeout=120, cwd=REPO, check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    hpa = next(o for o in json.loads(out.read_text()) if o["kind"] == "HorizontalPodAutoscaler"
               and o["metadata"]["name"] == table[0]["name"])
    behavior = hpa["spec"]["behavior"]
    assert behavior["scaleUp"]["policies"] == [{"type": "Pods", "value": 2, "periodSeconds": 5}]
    assert behavior["scaleDown"]["policies"] == [{"type": "Percent", "value": 50, "periodSeconds": 3}]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 7
    policy, _ = policy_from_inventory(table[0]["name"], inventory)
    assert [p.period_s for p in policy.up.policies] == [5]
    assert [p.period_s for p in policy.down.policies] == [3]
    assert policy.down.stabilization_s == 7


def _pod(name, node, gpus=(1,), init=(), app="stt", limits_only=False):
    def container(i, n):
        key = "limits" if limits_only else "requests"
        return {"name": f"c{i}", "resources": {key: {"nvidia.com/gpu": str(n)}} if n else {}}

    return {
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": app}},
        "spec": {
            "nodeName": node,
            "containers": [container(i, n) for i, n in enumerate(gpus)],
            "initContainers": [container(i, n) for i, n in enumerate(init)],
        },
    }


def test_gpu_requests_follow_the_schedulers_rule():
    # containers add up; init containers run one at a time before them, so the largest one counts if larger
    assert harness.pod_gpu_request(_pod("a", "n", gpus=(1, 1))) == 2
    assert harness.pod_gpu_request(_pod("b", "n", gpus=(1,), init=(3, 2))) == 3
    assert harness.pod_gpu_request(_pod("c", "n", gpus=(0,))) == 0
    assert harness.pod_gpu_request(_pod("d", "n", gpus=(2,), limits_only=True)) == 2
    with pytest.raises(harness.HarnessFilterError, match=r"pod e: nvidia.com/gpu='half' is not a whole number"):
        harness.pod_gpu_request({"metadata": {"name": "e"},
                                 "spec": {"containers": [{"resources": {"limits": {"nvidia.com/gpu": "half"}}}]}})


def test_free_slots_count_only_other_pods_on_the_gpu_nodes():
    nodes = [{"name": "gpu-0", "allocatable": 4}, {"name": "gpu-1", "allocatable": 4}]
    pods = [
        _pod("stt-1", "gpu-0"),
        _pod("tts-1", "gpu-1", gpus=(1,), init=(2,)),
        _pod("probe-1", "gpu-0", app="gpu-slot-probe"),  # the probe's own pods are not "other" pods
        _pod("cpu-1", "system-0"),  # not on a GPU node
        _pod("pending", None),
    ]
    assert harness.gpu_slots(pods, nodes, "gpu-slot-probe") == {"allocatable": 8, "used": 3, "free": 5}
    assert harness.gpu_slots(pods, nodes) == {"allocatable": 8, "used": 4, "free": 4}
    assert harness.gpu_slots(pods * 3, nodes)["free"] == 0  # never negative


@pytest.mark.parametrize(("cidr", "index", "expected"), [
    ("10.96.0.0/16", 1, "10.96.0.1"),
    ("10.96.0.0/16", 10, "10.96.0.10"),
    ("10.97.0.0/24", 254, "10.97.0.254"),
    ("10.96.0.0/12", 300, "10.96.1.44"),
])
def test_cidr_hosts(cidr, index, expected):
    assert harness.cidr_host(cidr, index) == expected


@pytest.mark.parametrize(("cidr", "index", "message"), [
    ("10.96.0.1/16", 1, "cidr='10.96.0.1/16'"),  # a host address, not the network's
    ("10.96.0.0", 1, "cidr='10.96.0.0': a network with host addresses"),  # a /32 has no hosts
    ("fd00::/64", 1, "an IPv4 network address"),
    ("10.96.0.0/24", 255, "index=255: a host number from 1 to 254"),
    ("10.96.0.0/24", "1", "index='1'"),
    ("10.96.0.0/24", 0, "index=0"),
])
def test_bad_cidr_host_inputs_are_named(cidr, index, message):
    with pytest.raises(harness.HarnessFilterError, match=re.escape(message)):
        harness.cidr_host(cidr, index)


def test_network_shape_and_overlap():
    assert harness.ipv4_network_ok("10.96.0.0/16", 12, 24)
    assert not harness.ipv4_network_ok("10.96.0.0/16", 20, 24)  # prefix out of range
    assert not harness.ipv4_network_ok("10.96.0.5/16", 12, 24)  # host bits
    assert not harness.ipv4_network_ok("10.96.0.0", 12, 32)  # no prefix written
    assert not harness.ipv4_network_ok(["10.96.0.0/16"], 12, 24)
    assert harness.cidrs_overlap("10.96.0.0/12", "10.100.0.0/24")
    assert not harness.cidrs_overlap("10.96.0.0/16", "10.244.0.0/24")
    assert not harness.cidrs_overlap("bad", "10.244.0.0/24")


def test_manifests_read_an_unquoted_equals_sign_as_kubectl_does():
    """prometheus-operator's CRDs list `- =` unquoted (matchType's enum); PyYAML's YAML 1.1 loader has no constructor
    for it and failed the CRD apply. The filter reads it as the string, as YAML 1.2 and kubectl do."""
    text = "---\nkind: A\nenum:\n  - '!='\n  - =\n  - =~\n---\n---\nkind: B\n"
    with pytest.raises(yaml.constructor.ConstructorError):
        list(yaml.safe_load_all(text))
    assert harness.manifests(text) == [{"kind": "A", "enum": ["!=", "=", "=~"]}, {"kind": "B"}]
    crds = sorted((Path.home() / ".cache/gpu-serving-harness/bin").glob("prometheus-operator-v*/crds/*.yaml"))
    for crd in crds:  # the real ones, where this machine built them
        docs = harness.manifests(crd.read_text(), crd.name)
        assert [d["kind"] for d in docs] == ["CustomResourceDefinition"], crd


@pytest.mark.parametrize("text, message", [(None, "must be YAML text, got NoneType"),
                                           ("a: [1", "crd.yaml is not valid YAML")])
def test_bad_manifests_are_named(text, message):
    with pytest.raises(ValueError, match=message):
        harness.manifests(text, "crd.yaml")
