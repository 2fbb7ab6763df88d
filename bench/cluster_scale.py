"""Scale benchmark of the local target: N simulated GPU nodes, then a Deployment of N x slots one-GPU pods.

Brings up a separate kwokctl cluster (its own name, port and state directory, so the running stack is not
touched) through the real playbook with one variable (`harness_local_gpu_nodes`), then times:
  - the cluster stage (build cached) until every node is Ready;
  - the scheduler placing every pod (all PodScheduled=True) and kwok marking them Running;
and checks one more pod stays Pending. Tears the cluster down at the end. Prints a table; `--json` writes it.

    scripts/in-venv python bench/cluster_scale.py --nodes 200
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from kubernetes import client, config

ROOT = Path(__file__).resolve().parents[1]
NS = "scale-bench"


def playbook(name: str, state: Path, nodes: int, port: int) -> float:
    t0 = time.monotonic()
    env = dict(os.environ, HARNESS_STATE_DIR=str(state))
    extra = ["-e", f"harness_local_gpu_nodes={nodes}", "-e", "local_cluster_name=scale",
             "-e", f"local_cluster_apiserver_port={port}", "-e", "local_cluster_system_nodes=0"]
    subprocess.run(["ansible-playbook", "-i", "inventories/local", f"playbooks/{name}", *extra],
                   cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - t0


def deployment(replicas: int) -> dict:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "gpu-probe", "namespace": NS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "gpu-probe"}},
            "template": {
                "metadata": {"labels": {"app": "gpu-probe"}},
                "spec": {
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                    "nodeSelector": {"nvidia.com/gpu.present": "true"},
                    "containers": [{"name": "probe", "image": "registry.k8s.io/pause:3.10",
                                    "resources": {"limits": {"nvidia.com/gpu": "1"}}}],
                },
            },
        },
    }


def count(core: client.CoreV1Api) -> tuple[int, int, int]:
    pods = core.list_namespaced_pod(NS).items
    scheduled = sum(1 for p in pods if p.spec.node_name)
    running = sum(1 for p in pods if p.status.phase == "Running")
    return len(pods), scheduled, running


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=200)
    ap.add_argument("--slots-per-node", type=int, default=4, help="GPUs x time-slicing replicas of the pool")
    ap.add_argument("--port", type=int, default=36443)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    state = Path(tempfile.mkdtemp(prefix="scale-bench-"))
    pods = args.nodes * args.slots_per_node
    try:
        print(f"[bench] bringing up {args.nodes} simulated GPU nodes (state {state})", flush=True)
        t_cluster = playbook("cluster.yml", state, args.nodes, args.port)
        api = config.new_client_from_config(config_file=str(state / "kubeconfig"))
        core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
        ready = sum(1 for n in core.list_node().items
                    if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or []))
        core.create_namespace({"metadata": {"name": NS}})
        print(f"[bench] {ready} nodes Ready in {t_cluster:.1f}s; creating {pods} one-GPU pods", flush=True)
        t0 = time.monotonic()
        apps.create_namespaced_deployment(NS, deployment(pods))
        t_scheduled = t_running = None
        while time.monotonic() - t0 < 1800:
            total, scheduled, running = count(core)
            now = time.monotonic() - t0
            if t_scheduled is None and scheduled >= pods:
                t_scheduled = now
            if running >= pods:
                t_running = now
                break
            print(f"[bench] t={now:6.1f}s pods={total} scheduled={scheduled} running={running}", flush=True)
            time.sleep(5)
        apps.patch_namespaced_deployment_scale("gpu-probe", NS, {"spec": {"replicas": pods + 1}})
        time.sleep(15)
        total, scheduled, running = count(core)
        result = {
            "date": datetime.now(UTC).strftime("%Y-%m-%d"), "machine": f"{platform.node()} {os.cpu_count()} cores",
            "nodes": args.nodes, "ready_nodes": ready, "pods": pods,
            "cluster_stage_seconds": round(t_cluster, 1),
            "all_scheduled_seconds": round(t_scheduled, 1) if t_scheduled else None,
            "all_running_seconds": round(t_running, 1) if t_running else None,
            "overflow_pending": total - scheduled,
        }
    finally:
        playbook("teardown.yml", state, args.nodes, args.port)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    ok = result["ready_nodes"] == args.nodes and result["all_running_seconds"] and result["overflow_pending"] == 1
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
