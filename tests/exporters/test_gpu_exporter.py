"""The GPU exporter end to end, short of a real API server: real worker metrics endpoints on 127.0.0.1,
the real collector in a fresh registry, configuration errors, and the NVML source."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest
from exporters_helpers import gpu_node, gpu_pod, samples, scrape
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from workers.gpu.busy import BusyRatioError, BusyRatioFetcher, check_url, parse_busy_ratio
from workers.gpu.cluster import build_inventory, parse_pod
from workers.gpu.config import load_config
from workers.gpu.readings import LABELS, GpuCollector, GpuSource, SourceResult
from workers.gpu.settings import ConfigError
from workers.gpu.simulated import SimulationModel
from workers.gpu.sources import NvmlSource, RefreshingSource, SimulatedSource, SourceUnavailable
from workers.gpu_exporter import build_registry


@pytest.fixture
def worker_endpoint() -> Iterator:
    """Start real worker-like /metrics endpoints serving model_worker_busy_ratio; yields a factory."""
    servers = []

    def start(ratio: float, service: str = "stt") -> tuple[str, Gauge]:
        registry = CollectorRegistry()
        gauge = Gauge("model_worker_busy_ratio", "busy", ["service"], registry=registry)
        gauge.labels(service=service).set(ratio)
        server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.server_port}/metrics", gauge

    yield start
    for server, thread in servers:
        server.shutdown()
        thread.join(timeout=5)


def test_busy_ratio_is_read_from_each_pods_worker_endpoint(worker_endpoint):
    url_a, _ = worker_endpoint(0.6)
    url_b, gauge_b = worker_endpoint(0.1, service="tts")
    pods = [
        parse_pod(gpu_pod("stt-a-1", "n0", metrics_url=url_a)),
        parse_pod(gpu_pod("tts-b-1", "n0", service="tts", metrics_url=url_b)),
        parse_pod(gpu_pod("stt-a-2", "n0")),  # no pod IP yet
    ]
    # The URL is the pod's own: status.podIP and its GPU container's port named metrics.
    assert (pods[0].pod_ip, f"http://127.0.0.1:{pods[0].metrics_port}/metrics") == ("127.0.0.1", url_a)
    readout = BusyRatioFetcher(timeout=2).fetch(pods)
    assert readout.ratios == {("model-serving", "stt-a-1"): 0.6, ("model-serving", "tts-b-1"): 0.1}
    assert readout.errors[("model-serving", "stt-a-2")] == "the pod has no IP yet"
    gauge_b.labels(service="tts").set(0.9)
    assert BusyRatioFetcher(timeout=2).fetch(pods[1:2]).ratios == {("model-serving", "tts-b-1"): 0.9}


def test_unreachable_worker_is_an_error_not_a_zero():
    with socket.socket() as s:  # a loopback port that nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = f"http://127.0.0.1:{port}/metrics"
    readout = BusyRatioFetcher(timeout=2).fetch([parse_pod(gpu_pod("stt-a-1", "n0", metrics_url=dead))])
    assert readout.ratios == {}
    assert "refused" in readout.errors[("model-serving", "stt-a-1")].lower()


def test_metrics_url_must_point_at_an_allowed_host():
    # Refused before any connection is attempted.
    with pytest.raises(BusyRatioError, match=r"host '10.1.2.3' is not in \['127.0.0.1'"):
        check_url("http://10.1.2.3:9000/metrics", ("127.0.0.1", "localhost"))
    # A network in the list admits its addresses (the real node's DaemonSet lists its pod network), only those.
    allowed = ("127.0.0.1", "10.244.0.0/24")
    assert check_url("http://10.244.0.17:9400/metrics", allowed) == "http://10.244.0.17:9400/metrics"
    with pytest.raises(BusyRatioError, match=r"host '10.244.1.17' is not in"):
        check_url("http://10.244.1.17:9400/metrics", allowed)
    with pytest.raises(BusyRatioError, match=r"host 'example.com' is not in"):
        check_url("http://example.com:9400/metrics", allowed)


def test_a_pod_without_a_metrics_port_is_named_not_guessed():
    from kubernetes.client import V1Container, V1ResourceRequirements

    gpu = {"nvidia.com/gpu": "1"}
    bare = V1Container(name="worker", image="w", resources=V1ResourceRequirements(requests=gpu, limits=gpu))
    pod = gpu_pod("stt-a-1", "n0", containers=[bare])
    pod.status.pod_ip = "127.0.0.1"
    readout = BusyRatioFetcher(timeout=2).fetch([parse_pod(pod)])
    assert readout.errors == {
        ("model-serving", "stt-a-1"): "no containerPort named 'metrics' on the pod's GPU containers"
    }
    with pytest.raises(BusyRatioError, match="scheme must be http or https"):
        check_url("file:///etc/passwd", ("127.0.0.1",))


def test_busy_ratio_parsing_rejects_missing_and_out_of_range_values():
    assert parse_busy_ratio('model_worker_busy_ratio{service="stt"} 0.25\n') == 0.25
    with pytest.raises(BusyRatioError, match="no model_worker_busy_ratio sample"):
        parse_busy_ratio("other_metric 1\n")
    with pytest.raises(BusyRatioError, match="outside"):
        parse_busy_ratio('model_worker_busy_ratio{service="stt"} 1.5\n')


def test_simulated_source_through_a_real_registry(worker_endpoint):
    url1, _ = worker_endpoint(0.5)
    url2, _ = worker_endpoint(0.3)
    nodes = [gpu_node("gpu-l4-0", gpus=1, replicas=4), gpu_node("gpu-l4-1", gpus=1, replicas=4)]
    pods = [
        gpu_pod("stt-a-1", "gpu-l4-0", minutes=0, metrics_url=url1),
        gpu_pod("stt-a-2", "gpu-l4-0", minutes=1, metrics_url=url2),
        gpu_pod("stt-a-3", "gpu-l4-0", minutes=2),  # worker not started yet
    ]
    source = SimulatedSource(
        lambda: build_inventory(nodes, pods), BusyRatioFetcher(timeout=2), SimulationModel()
    )
    scraped = scrape(build_registry(source))
    util = samples(scraped, "DCGM_FI_DEV_GPU_UTIL")
    assert all(set(labels) == set(LABELS) for labels, _ in util)
    by_pod = {(lab["Hostname"], lab["pod"]): value for lab, value in util}
    assert by_pod == {
        ("gpu-l4-0", "stt-a-1"): pytest.approx(80.0),
        ("gpu-l4-0", "stt-a-2"): pytest.approx(80.0),
        ("gpu-l4-0", "stt-a-3"): pytest.approx(80.0),
        ("gpu-l4-1", ""): 0.0,
    }
    assert {lab["source"] for lab, _ in util} == {"simulated"}
    assert {lab["modelName"] for lab, _ in util} == {"NVIDIA L4"}
    for name in (
        "DCGM_FI_DEV_FB_USED",
        "DCGM_FI_DEV_FB_FREE",
        "DCGM_FI_DEV_POWER_USAGE",
        "DCGM_FI_DEV_GPU_TEMP",
    ):
        assert len(samples(scraped, name)) == 4, name
    assert samples(scraped, "gpu_exporter_read_success") == [({"source": "simulated"}, 1.0)]
    assert samples(scraped, "gpu_exporter_busy_ratio_unavailable") == [({"source": "simulated"}, 1.0)]


def test_a_missing_busy_ratio_is_logged_once_not_on_every_scrape(caplog):
    nodes = [gpu_node("gpu-l4-0")]
    pods = [gpu_pod("stt-a-1", "gpu-l4-0")]
    source = SimulatedSource(
        lambda: build_inventory(nodes, pods), BusyRatioFetcher(timeout=2), SimulationModel()
    )
    with caplog.at_level("WARNING", logger="workers.gpu.sources"):
        for _ in range(3):
            assert source.read().busy_unavailable == 1
    assert [r.getMessage() for r in caplog.records] == [
        "busy ratio of pod model-serving/stt-a-1 unavailable, counted as idle: "
        "the pod has no IP yet"
    ]


class _FailingSource(GpuSource):
    name = "simulated"

    def read(self) -> SourceResult:
        raise ConnectionRefusedError("apiserver down")


def test_failed_read_serves_no_gpu_series_and_says_so():
    errors = []
    registry = CollectorRegistry()
    registry.register(GpuCollector(_FailingSource(), on_error=errors.append))
    scraped = scrape(registry)
    assert samples(scraped, "DCGM_FI_DEV_GPU_UTIL") == []
    assert samples(scraped, "gpu_exporter_read_success") == [({"source": "simulated"}, 0.0)]
    assert len(errors) == 1


class _CountingSource(GpuSource):
    name = "simulated"

    def __init__(self) -> None:
        self.reads = 0
        self.fail_with: Exception | None = None

    def read(self) -> SourceResult:
        self.reads += 1
        if self.fail_with:
            raise self.fail_with
        return SourceResult([], busy_unavailable=self.reads)


def test_refreshing_source_serves_the_latest_read_without_reading_on_scrape():
    inner, now = _CountingSource(), [100.0]
    source = RefreshingSource(inner, interval=2, max_age=10, clock=lambda: now[0])
    with pytest.raises(SourceUnavailable, match="has not been read yet"):
        source.read()
    source.refresh()
    registry = CollectorRegistry()
    registry.register(GpuCollector(source))
    for _ in range(3):
        assert samples(scrape(registry), "gpu_exporter_read_success") == [({"source": "simulated"}, 1.0)]
    assert inner.reads == 1  # scrapes never touched the inner source
    source.refresh()
    assert source.read().busy_unavailable == 2


def test_refreshing_source_reports_a_failed_or_stale_read_instead_of_serving_it():
    inner, now = _CountingSource(), [100.0]
    source = RefreshingSource(inner, interval=2, max_age=10, clock=lambda: now[0])
    source.refresh()
    inner.fail_with = SourceUnavailable("apiserver unreachable")
    source.refresh()
    with pytest.raises(SourceUnavailable, match="last read of the simulated source failed: apiserver unreachable"):
        source.read()
    registry = CollectorRegistry()
    registry.register(GpuCollector(source, on_error=lambda exc: None))
    assert samples(scrape(registry), "gpu_exporter_read_success") == [({"source": "simulated"}, 0.0)]
    inner.fail_with = None
    source.refresh()
    now[0] += 10.5  # the reader got stuck after this success
    with pytest.raises(SourceUnavailable, match=r"is 10\.5 s old \(max age 10 s\)"):
        source.read()


def test_refreshing_source_reads_in_the_background_and_stops():
    inner = _CountingSource()
    source = RefreshingSource(inner, interval=0.05, max_age=5)
    source.start()
    try:
        deadline = time.monotonic() + 5
        while inner.reads < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert inner.reads >= 4
    finally:
        source.stop()
    reads = inner.reads
    time.sleep(0.2)
    assert inner.reads == reads


def test_config_errors_name_setting_value_and_what_is_allowed(tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    ok = {"KUBECONFIG": str(kubeconfig)}
    with pytest.raises(
        ConfigError, match=r"GPU_EXPORTER_SOURCE \(--source\)='dcgm': allowed values are simulated, nvml"
    ):
        load_config([], {**ok, "GPU_EXPORTER_SOURCE": "dcgm"})
    with pytest.raises(
        ConfigError, match=r"METRICS_PORT \(--port\)='70000': must be a TCP port number 1-65535"
    ):
        load_config([], {**ok, "METRICS_PORT": "70000"})
    with pytest.raises(ConfigError, match=r"KUBECONFIG \(--kubeconfig\) is not set"):
        load_config([], {})
    with pytest.raises(ConfigError, match="no such file"):
        load_config(["--kubeconfig", str(tmp_path / "missing")], {})
    with pytest.raises(ConfigError, match=r"GPU_SIM_MEMORY_PER_POD_MIB .*='-5': must be >= 0"):
        load_config([], {**ok, "GPU_SIM_MEMORY_PER_POD_MIB": "-5"})
    with pytest.raises(ConfigError, match=r"GPU_EXPORTER_MAX_AGE_SECONDS \(--max-age\)='1': must be >= 2"):
        load_config(["--max-age", "1"], ok)
    with pytest.raises(
        ConfigError, match=r"GPU_EXPORTER_NODE_SELECTOR \(--node-selector\)='kubernetes.io/hostname in \(a\)': must be"
    ):
        load_config([], {**ok, "GPU_EXPORTER_NODE_SELECTOR": "kubernetes.io/hostname in (a)"})
    with pytest.raises(ConfigError, match=r"GPU_EXPORTER_NODE_SELECTOR .*='=node-1'"):
        load_config(["--node-selector", "=node-1"], ok)
    # In a pod (a DaemonSet on the real node) no kubeconfig is needed: the service account is used.
    in_pod = load_config([], {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "GPU_EXPORTER_NODE_SELECTOR":
                              "kubernetes.io/hostname=harness-node-1,harness.local/simulated-gpu=true"})
    assert in_pod.kubeconfig is None
    assert in_pod.node_selector == "kubernetes.io/hostname=harness-node-1,harness.local/simulated-gpu=true"
    with pytest.raises(ConfigError, match=r"GPU_EXPORTER_ALLOWED_HOSTS .*'10.244.0.5/24' is not a network address"):
        load_config([], {**ok, "GPU_EXPORTER_ALLOWED_HOSTS": "127.0.0.1,10.244.0.5/24"})
    assert load_config([], {**ok, "GPU_EXPORTER_ALLOWED_HOSTS": "127.0.0.1,10.244.0.0/24"}).allowed_hosts == (
        "127.0.0.1",
        "10.244.0.0/24",
    )
    cfg = load_config(["--port", "9500"], {**ok, "GPU_EXPORTER_ALLOWED_HOSTS": "127.0.0.1"})
    assert cfg.node_selector == ""
    assert (cfg.port, cfg.bind, cfg.allowed_hosts, cfg.source) == (
        9500,
        "127.0.0.1",
        ("127.0.0.1",),
        "simulated",
    )


def test_once_with_unreachable_apiserver_prints_health_zero(tmp_path, repo_root):
    # A kubeconfig pointing at a loopback port nothing listens on: the read fails fast, the exposition
    # still comes out, with read_success 0 and no GPU series.
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:9', insecure-skip-tls-verify: true}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "workers.gpu_exporter", "--once", "--api-timeout", "2"],
        cwd=repo_root,
        env={"KUBECONFIG": str(kubeconfig), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert 'gpu_exporter_read_success{source="simulated"} 0.0' in proc.stdout
    assert "DCGM_FI_DEV_GPU_UTIL{" not in proc.stdout
    assert "reading GPUs failed" in proc.stderr


def test_serves_on_loopback_and_stops_cleanly_on_sigterm(tmp_path, repo_root):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:9', insecure-skip-tls-verify: true}}]\n"
        "users: [{name: u, user: {token: t}}]\ncontexts: [{name: c, context: {cluster: k, user: u}}]\n"
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"KUBECONFIG": str(kubeconfig), "METRICS_PORT": str(port), "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.gpu_exporter", "--api-timeout", "1"],
        cwd=repo_root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        body = ""
        deadline = time.monotonic() + 30
        while "gpu_exporter_read_success" not in body and time.monotonic() < deadline:
            time.sleep(0.2)
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
            except OSError:
                continue
        assert 'gpu_exporter_read_success{source="simulated"} 0.0' in body
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out
    assert f"serving source=simulated on http://127.0.0.1:{port}/metrics" in out


def _nvml_available() -> bool:
    try:
        NvmlSource()
    except SourceUnavailable:
        return False
    return True


def test_nvml_source_on_this_host(repo_root):
    """On a host without an NVIDIA driver the exporter refuses to start with a clear message; on a GPU
    host it serves real readings labelled source=nvml with empty pod labels."""
    proc = subprocess.run(
        [sys.executable, "-m", "workers.gpu_exporter", "--source", "nvml", "--once"],
        cwd=repo_root,
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    if _nvml_available():
        assert proc.returncode == 0, proc.stderr
        assert 'source="nvml"' in proc.stdout and 'pod=""' in proc.stdout
    else:
        assert proc.returncode == 2
        assert "cannot initialise NVML" in proc.stderr
        assert "--source simulated" in proc.stderr


class _Nvml:
    """The slice of the pynvml API NvmlSource calls, with one L4-like device (bytes, mW, as NVML reports)."""

    class NVMLError(Exception):
        pass

    NVML_TEMPERATURE_GPU = 0

    class _Mem:
        used = 3 * 2**30
        free = 19 * 2**30

    class _Util:
        gpu = 42

    def nvmlInit(self):
        pass

    def nvmlDeviceGetCount(self):
        return 1

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetMemoryInfo(self, h):
        return self._Mem()

    def nvmlDeviceGetUUID(self, h):
        return b"GPU-1234"

    def nvmlDeviceGetName(self, h):
        return "NVIDIA L4"

    def nvmlDeviceGetUtilizationRates(self, h):
        return self._Util()

    def nvmlDeviceGetPowerUsage(self, h):
        return 35500

    def nvmlDeviceGetTemperature(self, h, sensor):
        return 51


def test_nvml_readings_convert_units_to_dcgm_conventions():
    (r,) = NvmlSource(hostname="host-a", nvml=_Nvml()).read().readings
    assert (r.gpu, r.uuid, r.model_name, r.hostname, r.source) == (
        "0",
        "GPU-1234",
        "NVIDIA L4",
        "host-a",
        "nvml",
    )
    assert (r.util_percent, r.fb_used_mib, r.fb_free_mib) == (42.0, 3072.0, 19456.0)
    assert (r.power_watts, r.temp_celsius) == (35.5, 51.0)
    assert (r.namespace, r.pod, r.container) == ("", "", "")
