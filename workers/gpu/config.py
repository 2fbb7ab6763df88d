"""GPU exporter configuration: flags, each defaulting to an environment variable, validated at start."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from workers.gpu import settings
from workers.gpu.busy import DEFAULT_ALLOWED_HOSTS
from workers.gpu.settings import ConfigError
from workers.gpu.simulated import SimulationModel

SOURCES = ("simulated", "nvml")
# Equality-based label selector terms (what a DaemonSet needs to name its own node), checked before the API sees it.
_KEY = r"(?:[A-Za-z0-9.-]{1,253}/)?[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?"
_VALUE = r"(?:[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?)?"
_SELECTOR = re.compile(rf"{_KEY}(?:==?|!=){_VALUE}(?:,{_KEY}(?:==?|!=){_VALUE})*")
DEFAULT_PORT = "9400"  # dcgm-exporter's port, so scrape configs look alike


@dataclass(frozen=True)
class GpuExporterConfig:
    source: str
    port: int
    bind: str
    once: bool
    kubeconfig: str | None
    api_timeout: float
    allowed_hosts: tuple[str, ...]
    busy_timeout: float
    refresh_seconds: float
    max_age_seconds: float
    node_name: str | None
    node_selector: str
    model: SimulationModel


# (flag, environment variable, default, help)
_OPTIONS = (
    ("--source", "GPU_EXPORTER_SOURCE", "simulated", "simulated (kwok nodes) or nvml (a host with GPUs)"),
    ("--port", "METRICS_PORT", DEFAULT_PORT, "port for /metrics"),
    ("--bind", "METRICS_BIND", "127.0.0.1", "address for /metrics"),
    (
        "--kubeconfig",
        "KUBECONFIG",
        None,
        "kubeconfig of the cluster (simulated source); unset in a pod: the pod's service account",
    ),
    (
        "--node-selector",
        "GPU_EXPORTER_NODE_SELECTOR",
        "",
        "simulated: only nodes matching this label selector (a DaemonSet pod: its own node, as dcgm-exporter)",
    ),
    ("--api-timeout", "GPU_EXPORTER_API_TIMEOUT_SECONDS", "5", "API server request timeout, seconds"),
    (
        "--allowed-hosts",
        "GPU_EXPORTER_ALLOWED_HOSTS",
        ",".join(DEFAULT_ALLOWED_HOSTS),
        "hosts and networks (CIDR) a GPU pod's worker metrics may be read from, comma separated",
    ),
    ("--busy-timeout", "GPU_EXPORTER_BUSY_TIMEOUT_SECONDS", "1", "timeout reading a worker's metrics"),
    (
        "--refresh",
        "GPU_EXPORTER_REFRESH_SECONDS",
        "2",
        "read the source in the background this often; scrapes get the latest read",
    ),
    (
        "--max-age",
        "GPU_EXPORTER_MAX_AGE_SECONDS",
        "15",
        "a read older than this is not served (the source is reported failed instead)",
    ),
    ("--node-name", "NODE_NAME", None, "Hostname label for the nvml source (default: this host's name)"),
    ("--memory-per-pod-mib", "GPU_SIM_MEMORY_PER_POD_MIB", "1024", "simulated: resident MiB per pod"),
    (
        "--memory-per-busy-mib",
        "GPU_SIM_MEMORY_PER_BUSY_MIB",
        "2048",
        "simulated: extra MiB per pod at busy ratio 1",
    ),
    (
        "--default-memory-mib",
        "GPU_SIM_DEFAULT_MEMORY_MIB",
        "16384",
        "simulated: GPU memory when a node has no nvidia.com/gpu.memory label",
    ),
    ("--temp-idle", "GPU_SIM_TEMP_IDLE_C", "35", "simulated: temperature at 0% utilisation"),
    ("--temp-max", "GPU_SIM_TEMP_MAX_C", "80", "simulated: temperature at 100% utilisation"),
)


def _parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m workers.gpu_exporter",
        description="GPU metrics with DCGM names, from NVML or simulated from the cluster's GPU pods.",
    )
    for flag, var, default, text in _OPTIONS:
        parser.add_argument(flag, default=env.get(var, default), help=f"{text} [env {var}]")
    parser.add_argument("--once", action="store_true", help="print the exposition once and exit")
    return parser


def load_config(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> GpuExporterConfig:
    env = os.environ if env is None else env
    args = _parser(env).parse_args(argv)
    source = settings.choice("GPU_EXPORTER_SOURCE (--source)", args.source, SOURCES)
    if source == "simulated" and not args.kubeconfig and not env.get("KUBERNETES_SERVICE_HOST"):
        raise ConfigError(
            "KUBECONFIG (--kubeconfig) is not set and this is not a pod (no KUBERNETES_SERVICE_HOST): the "
            "simulated source reads nodes and pods from the cluster"
        )
    node_selector = args.node_selector.strip()
    if node_selector and not _SELECTOR.fullmatch(node_selector):
        raise ConfigError(
            f"GPU_EXPORTER_NODE_SELECTOR (--node-selector)={args.node_selector!r}: must be a label selector of "
            "key=value or key!=value terms joined by commas (e.g. kubernetes.io/hostname=node-1)"
        )
    if args.kubeconfig and source == "simulated" and not os.path.isfile(args.kubeconfig):
        raise ConfigError(f"KUBECONFIG (--kubeconfig)={args.kubeconfig!r}: no such file")
    temp_idle = settings.number("GPU_SIM_TEMP_IDLE_C (--temp-idle)", args.temp_idle)
    temp_max = settings.number("GPU_SIM_TEMP_MAX_C (--temp-max)", args.temp_max)
    if temp_max < temp_idle:
        raise ConfigError(
            f"GPU_SIM_TEMP_MAX_C={args.temp_max!r}: must be >= GPU_SIM_TEMP_IDLE_C={args.temp_idle!r}"
        )
    model = SimulationModel(
        memory_per_pod_mib=settings.number(
            "GPU_SIM_MEMORY_PER_POD_MIB (--memory-per-pod-mib)", args.memory_per_pod_mib
        ),
        memory_per_busy_mib=settings.number(
            "GPU_SIM_MEMORY_PER_BUSY_MIB (--memory-per-busy-mib)", args.memory_per_busy_mib
        ),
        default_memory_mib=int(
            settings.number(
                "GPU_SIM_DEFAULT_MEMORY_MIB (--default-memory-mib)", args.default_memory_mib, minimum=1
            )
        ),
        temp_idle_celsius=temp_idle,
        temp_max_celsius=temp_max,
    )
    refresh = settings.number("GPU_EXPORTER_REFRESH_SECONDS (--refresh)", args.refresh, strict_minimum=True)
    max_age = settings.number("GPU_EXPORTER_MAX_AGE_SECONDS (--max-age)", args.max_age, minimum=refresh)
    return GpuExporterConfig(
        source=source,
        port=settings.port("METRICS_PORT (--port)", args.port),
        bind=args.bind,
        once=args.once,
        kubeconfig=args.kubeconfig,
        api_timeout=settings.number(
            "GPU_EXPORTER_API_TIMEOUT_SECONDS (--api-timeout)", args.api_timeout, strict_minimum=True
        ),
        allowed_hosts=settings.host_list("GPU_EXPORTER_ALLOWED_HOSTS (--allowed-hosts)", args.allowed_hosts),
        busy_timeout=settings.number(
            "GPU_EXPORTER_BUSY_TIMEOUT_SECONDS (--busy-timeout)", args.busy_timeout, strict_minimum=True
        ),
        refresh_seconds=refresh,
        max_age_seconds=max_age,
        node_name=args.node_name,
        node_selector=node_selector,
        model=model,
    )
