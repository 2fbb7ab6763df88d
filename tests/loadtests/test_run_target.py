"""Where `python -m loadtests.run` reaches the stack when an option is left out: the inventory's answer, as Ansible
evaluates it (roles/harness: harness_endpoints and the loadtest_* defaults), not loopback ports of the host-process
path. Before, the defaults were http://127.0.0.1:18080 / :19090 / :19093, the state directory's key file and a
fixed `webhook` evidence and namespace: on the local target with its real node (the default) none of those is
where the stack is, so a bare `python -m loadtests.run` (and bench/reaction_timeline.py, which runs it so) aborted
or, worse, judged another stack."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from loadtests import inventory as inventory_facts
from loadtests import run as run_mod

REPO = Path(__file__).resolve().parents[2]
LOCAL = REPO / "inventories" / "local"


def answers(**over):
    base = {
        "target_name": "local", "state_dir": "/state", "gateway_url": "service:model-serving/gateway:http",
        "api_key_file": "secret:gateway-api-key/key", "prometheus_url": "service:monitoring/prometheus-operated:web",
        "alertmanager_url": "service:monitoring/alertmanager-operated:web",
        "cost_config": "configmap:model-serving/cost-exporter/config.yml", "webhook_listen": "10.244.0.1:19095",
        "alert_evidence": "webhook", "fault_runtime": "kubernetes", "kubeconfig": "/state/kubeconfig",
        "namespace": "model-serving",
    }
    return {**base, **over}


def test_left_out_options_come_from_the_inventory_in_one_evaluation():
    asked = []

    def value(expr, inventory):
        asked.append((expr, inventory))
        return answers()

    args = run_mod.resolve_target(run_mod.parse_args(["--scenario", "smoke"]), value)
    assert len(asked) == 1 and asked[0][1] == run_mod.DEFAULT_INVENTORY
    assert args.gateway_url == "service:model-serving/gateway:http"
    assert args.kubeconfig == Path("/state/kubeconfig") and args.state_dir == Path("/state")
    assert str(args.api_key_file) == "secret:gateway-api-key/key"
    assert (args.alert_evidence, args.fault_runtime, args.namespace) == ("webhook", "kubernetes", "model-serving")


def test_options_given_win_and_only_the_rest_is_asked():
    asked = []

    def value(expr, inventory):
        asked.append(expr)
        return answers()

    args = run_mod.parse_args(["--gateway-url", "http://gw.example:8080", "--namespace", "serving",
                               "--fault-runtime", "kubernetes"])
    run_mod.resolve_target(args, value)
    assert args.gateway_url == "http://gw.example:8080" and args.namespace == "serving"
    assert args.fault_runtime == "kubernetes"
    assert "harness_endpoints.gateway" not in asked[0] and "harness_namespace" not in asked[0]
    assert "harness_loadtest_fault_runtime" not in asked[0]
    assert "harness_endpoints.prometheus" in asked[0]


def test_the_retired_host_fault_runtime_is_refused_by_name():
    """From the command line or from an inventory that still sets it, before anything runs."""
    with pytest.raises(run_mod.Aborted, match=r"fault runtime 'host' .* is invalid: allowed is kubernetes \(the host "
                                              r"runtime went with the retired host-process path"):
        run_mod.resolve_target(run_mod.parse_args(["--fault-runtime", "host"]), lambda e, i: answers())
    with pytest.raises(run_mod.Aborted, match=r"fault runtime 'host' .* is invalid: allowed is kubernetes"):
        run_mod.resolve_target(run_mod.parse_args([]), lambda e, i: answers(fault_runtime="host"))


def test_nothing_is_asked_when_every_option_is_given():
    """playbooks/loadtest.yml passes every option: no second Ansible run inside the first."""
    argv = []
    for name in run_mod.INVENTORY_DEFAULTS:
        argv += [f"--{name.replace('_', '-')}", "webhook" if name == "alert_evidence" else
                 "kubernetes" if name == "fault_runtime" else f"/x/{name}"]

    def value(expr, inventory):
        raise AssertionError(f"asked {expr}")

    args = run_mod.resolve_target(run_mod.parse_args(argv), value)
    assert args.prometheus_url == "/x/prometheus_url"


def test_an_inventory_that_cannot_answer_is_named():
    def broken(expr, inventory):
        raise RuntimeError("ansible could not evaluate ...: 'harness_namespace' is undefined")

    with pytest.raises(run_mod.Aborted, match=r"--inventory .*inventories/local: cannot read where the stack "
                                              r"is \(target_name, state_dir, gateway_url.*'harness_namespace'"):
        run_mod.resolve_target(run_mod.parse_args([]), broken)
    with pytest.raises(run_mod.Aborted, match=r"harness_endpoints.gateway is empty; give --gateway-url"):
        run_mod.resolve_target(run_mod.parse_args([]), lambda e, i: answers(gateway_url=""))


def test_the_local_inventory_answers_the_cluster_path():
    """Asked of Ansible itself. Expected from the inventory file (local_real_node_enabled) and docs/loadtests.md's
    table: the Services through the API server, the gateway's Secret, the webhook at the node's bridge address and
    the kubernetes fault runtime (before, the inventory pinned `host`: its kills went to pod-runner processes that
    do not exist there). The host-process path and its loopback ports are retired: with the real node switched off
    the endpoints are the same references (the service roles' preflight refuses to deploy there)."""
    inventory = yaml.safe_load((LOCAL / "group_vars/all/platform.yml").read_text())
    node_ip = inventory_facts.facts(LOCAL)["harness_local_node_ip"]
    assert inventory["local_real_node_enabled"] is True
    args = run_mod.resolve_target(run_mod.parse_args([]))
    assert args.gateway_url.startswith("service:model-serving/gateway:")
    assert args.prometheus_url.startswith("service:monitoring/")
    assert str(args.api_key_file).startswith("secret:")
    assert args.webhook_listen == f"{node_ip}:19095"
    assert (args.alert_evidence, args.fault_runtime, args.target_name) == ("webhook", "kubernetes", "local")

    def no_node(expr, inv):
        return inventory_facts.ansible_value(expr, inv, "-e", "local_real_node_enabled=false")

    args = run_mod.resolve_target(run_mod.parse_args([]), no_node)
    assert args.gateway_url.startswith("service:model-serving/gateway:")
    assert str(args.cost_config).startswith("configmap:model-serving/")
    assert args.fault_runtime == "kubernetes"


def test_an_inventory_replaces_a_loadtest_default(tmp_path):
    """The loadtest_* variables are role defaults, so an inventory's group_vars win (they were play vars of
    loadtest.yml, which outrank group_vars: an inventory setting harness_loadtest_alert_evidence was ignored)."""
    inv = tmp_path / "inv"
    shutil.copytree(LOCAL, inv)
    (inv / "group_vars/all/zz-evidence.yml").write_text("harness_loadtest_alert_evidence: alertmanager\n")
    assert inventory_facts.ansible_value("harness_loadtest_alert_evidence", inv) == "alertmanager"
    play = yaml.safe_load((REPO / "playbooks/loadtest.yml").read_text())[0]
    shadowed = {expr for expr in run_mod.INVENTORY_DEFAULTS.values() if expr in (play.get("vars") or {})}
    assert not shadowed, f"playbooks/loadtest.yml's play vars outrank the inventory: {sorted(shadowed)}"
