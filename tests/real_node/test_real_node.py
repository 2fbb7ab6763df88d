"""A real node (roles/real_node) joined to a kwokctl control plane of the test's own, beside kwok nodes.

Everything the user relies on, through the project's roles and kubectl: the node registers Ready with the kubelet
built here; a pod whose image comes from a local registry is scheduled to it, gets an address from the node's pod
CIDR, runs, and answers `kubectl logs` and `kubectl exec`; a second converge changes nothing; teardown leaves no
process, mount, namespace, interface, iptables rule, cgroup or file (files/leftovers.sh prints nothing).
The test's own state directory, cluster, bridge, pod network and ports (28xxx): tests/real_node/vars.yml.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.real_node, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
VARS = yaml.safe_load((HERE / "vars.yml").read_text())
STATE = Path.home() / ".local/state/gpu-serving-harness/real-node-test"
CACHE = Path(os.environ.get("HARNESS_CACHE", Path.home() / ".cache/gpu-serving-harness"))
KUBECTL = CACHE / "bin/kubernetes-v1.35.4/kubectl"
NODE = VARS["real_node_name"]
REGISTRY = f"127.0.0.1:{VARS['images_registry_port']}"
IMAGE = f"{REGISTRY}/harness/busybox:1"
LEFTOVERS = REPO / "roles/real_node/files/leftovers.sh"
# Set by the bridge plugin (ip_forward) and the kubelet (its kernel defaults); teardown puts them back.
SYSCTLS = ["net.ipv4.ip_forward", "vm.overcommit_memory", "kernel.panic", "kernel.panic_on_oops"]


def sysctls() -> dict[str, str]:
    return {k: subprocess.run(["sysctl", "-n", k], capture_output=True, text=True).stdout.strip() for k in SYSCTLS}


def playbook(name: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", "-e",
                           f"ansible_python_interpreter={sys.executable}", str(HERE / name)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def recap(result: subprocess.CompletedProcess) -> dict[str, int]:
    line = re.search(r"^localhost\s+:(.*)$", result.stdout, re.M)
    assert line, result.stdout[-3000:]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line.group(1))}


def kubectl(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    r = subprocess.run([str(KUBECTL), "--kubeconfig", str(STATE / "kubeconfig"), *args],
                       capture_output=True, text=True, timeout=timeout)
    if check:
        assert r.returncode == 0, f"kubectl {' '.join(args)}: {r.stderr}"
    return r


def leftovers() -> str:
    r = subprocess.run([str(LEFTOVERS), str(STATE / "real-node"), VARS["real_node_bridge"], VARS["real_node_pod_cidr"]],
                       capture_output=True, text=True, timeout=60)
    return r.stdout.strip()


@pytest.fixture(scope="module")
def node():
    if os.geteuid() != 0:
        pytest.skip("the real node needs root: it creates a bridge, network namespaces and iptables rules")
    missing = [p for p in ("/usr/bin/containerd", "/usr/sbin/runc", "/usr/lib/cni/bridge", "/usr/bin/skopeo")
               if not Path(p).exists()]
    assert not missing, f"missing {missing}: run scripts/bootstrap.sh"
    playbook("teardown.yml")  # an earlier run that stopped halfway
    before = sysctls()
    started = time.monotonic()
    r = playbook("converge.yml")
    assert r.returncode == 0, r.stdout[-6000:]
    print(f"converge: {time.monotonic() - started:.1f}s")
    yield before
    if STATE.exists():  # the teardown test did not run or failed: leave nothing behind anyway
        playbook("teardown.yml")


def test_node_is_ready_with_the_kubelet_built_here(node):
    obj = json.loads(kubectl("get", "node", NODE, "-o", "json").stdout)
    ready = {c["type"]: c["status"] for c in obj["status"]["conditions"]}["Ready"]
    assert ready == "True", obj["status"]["conditions"]
    info = obj["status"]["nodeInfo"]
    assert info["kubeletVersion"] == "v1.35.4", info
    assert info["containerRuntimeVersion"].startswith("containerd://1.6"), info
    addresses = {a["type"]: a["address"] for a in obj["status"]["addresses"]}
    assert addresses["InternalIP"] == VARS["real_node_ip"], addresses
    # kwok keeps its fake nodes and never took over the real one.
    fake = json.loads(kubectl("get", "nodes", "-l", "type=kwok", "-o", "json").stdout)["items"]
    assert fake and all(n["status"]["nodeInfo"]["kubeletVersion"] == "fake" for n in fake)
    assert "kwok.x-k8s.io/node" not in (obj["metadata"].get("annotations") or {})


def test_a_pod_from_the_local_registry_runs_with_logs_and_exec(node):
    archive = STATE / "real-node/images/busybox.tar"
    push = subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci-archive:{archive}:1",
                           f"docker://{IMAGE}"], capture_output=True, text=True, timeout=120)
    assert push.returncode == 0, push.stderr
    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hello", "namespace": "default"},
        "spec": {"nodeSelector": {"harness.local/real-node": "true"}, "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "hello", "image": IMAGE, "imagePullPolicy": "Always",
                                 "command": ["/bin/busybox", "sh", "-c",
                                             "echo hello-from-the-real-node; exec /bin/busybox sleep 3600"]}]},
    }
    path = STATE / "hello-pod.json"
    path.write_text(json.dumps(pod))
    kubectl("apply", "-f", str(path))
    kubectl("wait", "--for=condition=Ready", "pod/hello", "--timeout=90s", timeout=100)
    obj = json.loads(kubectl("get", "pod", "hello", "-o", "json").stdout)
    assert obj["spec"]["nodeName"] == NODE
    pod_ip = ipaddress.ip_address(obj["status"]["podIP"])
    assert pod_ip in ipaddress.ip_network(VARS["real_node_pod_cidr"]), obj["status"]
    assert obj["status"]["containerStatuses"][0]["imageID"].startswith(f"{REGISTRY}/harness/busybox@sha256:")
    assert "hello-from-the-real-node" in kubectl("logs", "hello").stdout
    out = kubectl("exec", "hello", "--", "/bin/busybox", "sh", "-c", "echo exec-ok; /bin/busybox hostname").stdout
    assert out.split() == ["exec-ok", "hello"], out


def test_a_second_converge_changes_nothing(node):
    r = playbook("converge.yml")
    assert r.returncode == 0, r.stdout[-6000:]
    changed = [m.group(1) for m in re.finditer(r"^TASK \[(.*)\][^\n]*\n[^\n]*\nchanged:", r.stdout, re.M)]
    assert recap(r)["changed"] == 0, changed
    # The pod kept running through it.
    assert json.loads(kubectl("get", "pod", "hello", "-o", "json").stdout)["status"]["phase"] == "Running"


def test_teardown_leaves_nothing(node):
    before = leftovers()
    assert "interface" in before and "process" in before, before  # the checker sees the node while it runs
    r = playbook("teardown.yml")
    assert r.returncode == 0, r.stdout[-6000:]
    assert leftovers() == ""
    assert not STATE.exists()
    assert sysctls() == node, "the host's sysctls differ from before the node"
    assert shutil.which("ip") and VARS["real_node_bridge"] not in subprocess.run(
        ["ip", "-o", "link"], capture_output=True, text=True).stdout
