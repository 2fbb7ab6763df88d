"""One reading per GPU (or per GPU and pod), and how it becomes DCGM-named Prometheus series.

Names, units and labels follow NVIDIA dcgm-exporter so that dashboards, alert rules and
prometheus-adapter rules work unchanged whichever source produced the numbers:
utilisation in percent, framebuffer in MiB, power in W, temperature in degrees C.
``source`` is this project's addition: ``nvml`` or ``simulated``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

# vgpu: dcgm-exporter's label, with --kubernetes-virtual-gpus, for a pod's slot on a time-shared GPU (the replica
# index of the device ID the device plugin handed out); empty (absent in Prometheus) for an unshared GPU.
LABELS = ("gpu", "UUID", "modelName", "Hostname", "namespace", "pod", "container", "vgpu", "source")


@dataclass(frozen=True)
class GpuReading:
    gpu: str
    uuid: str
    model_name: str
    hostname: str
    util_percent: float
    fb_used_mib: float
    fb_free_mib: float
    power_watts: float
    temp_celsius: float
    source: str
    namespace: str = ""
    pod: str = ""
    container: str = ""
    vgpu: str = ""

    def label_values(self) -> list[str]:
        return [
            self.gpu,
            self.uuid,
            self.model_name,
            self.hostname,
            self.namespace,
            self.pod,
            self.container,
            self.vgpu,
            self.source,
        ]


@dataclass(frozen=True)
class DcgmField:
    name: str
    help: str
    value: Callable[[GpuReading], float]


DCGM_FIELDS = (
    DcgmField("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", lambda r: r.util_percent),
    DcgmField("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).", lambda r: r.fb_used_mib),
    DcgmField("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB).", lambda r: r.fb_free_mib),
    DcgmField("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W).", lambda r: r.power_watts),
    DcgmField("DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C).", lambda r: r.temp_celsius),
)

# Every metric name the GPU exporter can emit (the dashboards test checks against this).
EXPORTER_HEALTH_METRIC = "gpu_exporter_read_success"
BUSY_ERRORS_METRIC = "gpu_exporter_busy_ratio_unavailable"
METRIC_NAMES = (*tuple(f.name for f in DCGM_FIELDS), EXPORTER_HEALTH_METRIC, BUSY_ERRORS_METRIC)


@dataclass(frozen=True)
class SourceResult:
    readings: list[GpuReading]
    # Pods whose worker busy ratio could not be read (counted as idle); only the simulated source has any.
    busy_unavailable: int = 0


class GpuSource:
    """What the collector needs from a source: a name and a read() that returns current readings."""

    name: str

    def read(self) -> SourceResult:  # pragma: no cover - interface
        raise NotImplementedError


class GpuCollector(Collector):
    """Reads the source on every scrape; a failed read yields the health gauge at 0 and no GPU series,
    so stale numbers are never served as current."""

    def __init__(self, source: GpuSource, on_error: Callable[[Exception], None] | None = None) -> None:
        self._source = source
        self._on_error = on_error

    def describe(self) -> Iterable[GaugeMetricFamily]:
        # Returning descriptions keeps registration from calling read() (which may hit the network).
        for f in DCGM_FIELDS:
            yield GaugeMetricFamily(f.name, f.help, labels=LABELS)
        yield from self._health(0, 0)

    def _health(self, ok: int, unavailable: int) -> Iterator[GaugeMetricFamily]:
        health = GaugeMetricFamily(
            EXPORTER_HEALTH_METRIC, "1 if the last read of the GPU source succeeded.", labels=["source"]
        )
        health.add_metric([self._source.name], ok)
        yield health
        busy = GaugeMetricFamily(
            BUSY_ERRORS_METRIC,
            "Pods whose worker busy ratio could not be read in the last read (treated as idle).",
            labels=["source"],
        )
        busy.add_metric([self._source.name], unavailable)
        yield busy

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            result = self._source.read()
        except Exception as exc:  # any source failure is reported, never served stale
            if self._on_error:
                self._on_error(exc)
            yield from self._health(0, 0)
            return
        for f in DCGM_FIELDS:
            family = GaugeMetricFamily(f.name, f.help, labels=LABELS)
            for r in result.readings:
                family.add_metric(r.label_values(), f.value(r))
            yield family
        yield from self._health(1, result.busy_unavailable)
