"""The two GPU sources behind one interface: NVML on hosts with GPUs, simulated on kwok nodes."""

from __future__ import annotations

import logging
import socket
import threading
import time
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


class RefreshingSource(GpuSource):
    """Reads an inner source on a background thread every `interval` seconds; read() returns the latest
    result at once. A scrape then never waits on the API server and the workers: on a machine saturated by
    the very load that is being measured, a direct read can outlast Prometheus's scrape timeout, and the
    exporter would look down exactly when its metric matters.

    Freshness stays explicit: if the latest read failed, or the latest success is older than `max_age`
    seconds (the reader is stuck), read() raises, so the collector reports the source as failed instead of
    serving old numbers as current."""

    def __init__(
        self, inner: GpuSource, interval: float, max_age: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if interval <= 0 or max_age < interval:
            raise ValueError(f"interval={interval} must be > 0 and max_age={max_age} >= interval")
        self.name = inner.name
        self._inner = inner
        self._interval = interval
        self._max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._latest: SourceResult | None = None
        self._latest_at: float | None = None
        self._error: Exception | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> None:
        """One read of the inner source, recorded as the latest result or the latest error."""
        try:
            result = self._inner.read()
        except Exception as exc:  # any source failure is recorded and reported by read()
            with self._lock:
                self._error = exc
            return
        with self._lock:
            self._latest, self._latest_at, self._error = result, self._clock(), None

    def _run(self) -> None:
        while not self._stop.is_set():
            started = self._clock()
            self.refresh()
            self._stop.wait(max(0.0, self._interval - (self._clock() - started)))

    def start(self) -> None:
        """Read once now, then keep reading in the background."""
        self.refresh()
        self._thread = threading.Thread(target=self._run, name="gpu-source-refresh", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self._max_age)

    def read(self) -> SourceResult:
        with self._lock:
            latest, at, error = self._latest, self._latest_at, self._error
        if error is not None:
            raise SourceUnavailable(f"the last read of the {self.name} source failed: {error}") from error
        if latest is None or at is None:
            raise SourceUnavailable(f"the {self.name} source has not been read yet")
        age = self._clock() - at
        if age > self._max_age:
            raise SourceUnavailable(
                f"the last successful read of the {self.name} source is {age:.1f} s old (max age {self._max_age:g} s)"
            )
        return latest
