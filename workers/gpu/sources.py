"""The two GPU sources behind one interface: NVML on hosts with GPUs, simulated on kwok nodes."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any

from workers.gpu.busy import BusyRatioFetcher
from workers.gpu.cluster import GpuInventory
from workers.gpu.readings import GpuReading, GpuSource, SourceResult
from workers.gpu.simulated import SimulationModel, simulate

log = logging.getLogger(__name__)


class SourceUnavailable(RuntimeError):
    pass


class SimulatedSource(GpuSource):
    name = "simulated"

    def __init__(
        self,
        read_inventory: Callable[[], GpuInventory],
        fetcher: BusyRatioFetcher,
        model: SimulationModel,
    ) -> None:
        self._read_inventory = read_inventory
        self._fetcher = fetcher
        self._model = model
        # Problems already logged: each is logged when it appears, not on every scrape.
        self._reported: set[str] = set()

    def _report(self, problems: list[str]) -> None:
        for problem in problems:
            if problem not in self._reported:
                log.warning("%s", problem)
        self._reported = set(problems)

    def read(self) -> SourceResult:
        inventory = self._read_inventory()
        on_gpu_nodes = {n.name for n in inventory.nodes}
        pods = [p for p in inventory.pods if p.node in on_gpu_nodes]
        busy = self._fetcher.fetch(pods)
        readings, unplaced = simulate(inventory, busy.ratios, self._model)
        self._report(
            [
                f"busy ratio of pod {ns}/{pod} unavailable, counted as idle: {error}"
                for (ns, pod), error in sorted(busy.errors.items())
            ]
            + [
                f"pod {pod.namespace}/{pod.name} container {container} requests more GPU slots than node "
                f"{pod.node} has left; not placed"
                for pod, container in unplaced
            ]
        )
        return SourceResult(readings, busy_unavailable=len(busy.errors))


class NvmlSource(GpuSource):
    """Real readings from the NVIDIA driver through NVML (nvidia-ml-py).

    NVML knows devices and processes, not Kubernetes pods, so ``namespace``/``pod``/``container`` are
    empty here. On clusters, dcgm-exporter (deployed by the GPU Operator) fills them by asking the
    kubelet's pod-resources API which pod holds which device; use it there. This source is for hosts
    that run the harness directly on a GPU machine.
    """

    name = "nvml"

    def __init__(self, hostname: str | None = None, nvml: Any = None) -> None:
        if nvml is None:
            try:
                import pynvml as nvml  # provided by the nvidia-ml-py package
            except ImportError as exc:
                raise SourceUnavailable("source nvml needs the nvidia-ml-py package") from exc
        self._nvml = nvml
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            raise SourceUnavailable(
                f"source nvml: cannot initialise NVML ({exc}); is an NVIDIA driver installed? "
                "Use --source simulated on hosts without GPUs"
            ) from exc
        self.hostname = hostname or socket.gethostname()

    def _text(self, value: Any) -> str:
        return value.decode() if isinstance(value, bytes) else str(value)

    def read(self) -> SourceResult:
        nvml = self._nvml
        readings = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            mem = nvml.nvmlDeviceGetMemoryInfo(handle)
            readings.append(
                GpuReading(
                    gpu=str(index),
                    uuid=self._text(nvml.nvmlDeviceGetUUID(handle)),
                    model_name=self._text(nvml.nvmlDeviceGetName(handle)),
                    hostname=self.hostname,
                    util_percent=float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu),
                    fb_used_mib=mem.used / 2**20,
                    fb_free_mib=mem.free / 2**20,
                    power_watts=nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0,
                    temp_celsius=float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)),
                    source=self.name,
                )
            )
        return SourceResult(readings)
