"""testinfra checks of the local control plane: real processes, loopback-only ports, a private kubeconfig."""

import os

KUBECONFIG = os.environ["HARNESS_KUBECONFIG"]
PORT = int(os.environ["APISERVER_PORT"])
WORKDIR = os.environ["KWOK_WORKDIR"]
KUBECTL = os.environ["KUBECTL"]


def _procs_of_this_cluster(host):
    return [p for p in host.process.filter() if WORKDIR in " ".join(p.get("args", "").split()[:80])]


def test_control_plane_processes_run(host):
    args = [p["args"] for p in _procs_of_this_cluster(host)]
    for binary in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok-controller"):
        assert any(a.split()[0].endswith("/" + binary) for a in args), f"{binary} not running: {args}"


def test_apiserver_listens_on_loopback_only(host):
    assert host.socket(f"tcp://127.0.0.1:{PORT}").is_listening
    assert not host.socket(f"tcp://0.0.0.0:{PORT}").is_listening


def test_kubeconfig_is_private(host):
    f = host.file(KUBECONFIG)
    assert f.exists
    assert f.mode == 0o600


def test_kubectl_lists_gpu_capacity(host):
    out = host.check_output(
        "%s --kubeconfig %s get nodes -l nvidia.com/gpu.present=true "
        "-o jsonpath='{range .items[*]}{.status.allocatable.nvidia\\.com/gpu}{\"\\n\"}{end}'",
        KUBECTL,
        KUBECONFIG,
    )
    values = sorted(int(v) for v in out.split())
    assert values == [2, 3, 3]
