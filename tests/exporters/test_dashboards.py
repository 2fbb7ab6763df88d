"""The Grafana dashboards: valid JSON, and every metric name their queries use is one that something in
the project registers (checked against real registries of the exporters and the worker) or a documented
external source (kube-state-metrics, Prometheus' own ``up``)."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from exporters_helpers import gpu_node, gpu_pod, scrape
from prometheus_client import CollectorRegistry

from workers.core.queues_setting import QueueRef
from workers.cost.exporter import CONTRACT_METRICS as COST_CONTRACT
from workers.cost.exporter import ConfigWatcher, CostCollector, CostExporter
from workers.cost.ledger import Ledger
from workers.gpu.busy import BusyRatioFetcher
from workers.gpu.cluster import build_inventory
from workers.gpu.readings import DCGM_FIELDS
from workers.gpu.simulated import SimulationModel
from workers.gpu.sources import SimulatedSource
from workers.gpu_exporter import build_registry
from workers.queue_exporter.collector import QueueCollector, QueueCounts
from workers.worker.busy import BusyTracker
from workers.worker.metrics import WorkerMetrics

DASHBOARDS = sorted(
    (Path(__file__).resolve().parents[2] / "roles/prometheus_stack/files/dashboards").glob("*.json")
)
# Metrics from outside the project: kube-state-metrics on clusters (the local target exports the same
# names for HPAs) and Prometheus' per-target health series.
EXTERNAL = {
    "up",
    "kube_horizontalpodautoscaler_status_current_replicas",
    "kube_horizontalpodautoscaler_spec_max_replicas",
}
PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
}


def metric_names(expr: str) -> set[str]:
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
        following = expr[m.end() :].lstrip()
        if following.startswith("(") or m.group(0).lower() in PROMQL_WORDS:
            continue  # a function or aggregation, or a keyword
        names.add(m.group(0))
    return names


def test_metric_name_extraction():
    expr = (
        "histogram_quantile(0.95, sum by (le, service) (rate(model_worker_job_duration_seconds_bucket"
        '{service=~"$service"}[5m]))) / on (service) group_left(x) up{job="a"} > bool 1 or vector(0)'
    )
    assert metric_names(expr) == {"model_worker_job_duration_seconds_bucket", "up"}


def sample_names(registry: CollectorRegistry) -> set[str]:
    return {name for (name, _labels) in scrape(registry)}


def gpu_exporter_names() -> set[str]:
    nodes = [gpu_node("gpu-l4-0"), gpu_node("gpu-l4-1")]
    pods = [gpu_pod("stt-a-1", "gpu-l4-0")]
    source = SimulatedSource(lambda: build_inventory(nodes, pods), BusyRatioFetcher(), SimulationModel())
    return sample_names(build_registry(source))


def cost_exporter_names(tmp_path) -> set[str]:
    cfg = tmp_path / "cost.yml"
    cfg.write_text("services: [{name: stt, namespace: model-serving, queue: stt, monthly_budget_usd: 100}]\n")
    exporter = CostExporter(
        watcher=ConfigWatcher(cfg),
        ledger=Ledger(),
        read_inventory=lambda: build_inventory([gpu_node("gpu-l4-0")], [gpu_pod("stt-a-1", "gpu-l4-0")]),
        read_job_rates=lambda _c: {"stt": 1.0},
        state_file=None,
        max_gap_seconds=300,
    )
    exporter.update()
    exporter.update()
    registry = CollectorRegistry()
    registry.register(CostCollector(lambda: exporter.published))
    return sample_names(registry)


def worker_names() -> set[str]:
    registry = CollectorRegistry()
    WorkerMetrics("stt", "stt", registry, BusyTracker(), {"service": "stt"})
    return sample_names(registry)


def queue_exporter_names() -> set[str]:
    class Reader:
        async def read(self):
            return {"stt": QueueCounts(waiting=1, active=2, delayed=3, failed=4, completed=5)}

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        config = SimpleNamespace(queues=[QueueRef("stt", "stt")], timeout_s=5.0)
        registry = CollectorRegistry()
        registry.register(QueueCollector(config, Reader(), loop))
        return sample_names(registry)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.close()


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> set[str]:
    gpu = gpu_exporter_names()
    cost = cost_exporter_names(tmp_path_factory.mktemp("cost"))
    # The registries really emit the contract names (shared DESIGN), not just these tests' idea of them.
    assert {f.name for f in DCGM_FIELDS} <= gpu
    assert set(COST_CONTRACT) <= cost
    return gpu | cost | worker_names() | queue_exporter_names() | EXTERNAL


def dashboard_exprs(path: Path) -> list[tuple[str, str]]:
    board = json.loads(path.read_text())
    exprs = [(p["title"], t["expr"]) for p in board["panels"] for t in p.get("targets", [])]
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            exprs.append(
                (f"variable {var['name']}", re.sub(r"label_values\(([^,]+),.*", r"\1", var["definition"]))
            )
    return exprs


def test_there_are_gpu_cost_and_queue_dashboards():
    assert {p.name for p in DASHBOARDS} == {"gpu.json", "cost.json", "queues.json"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_valid_grafana_json(path):
    board = json.loads(path.read_text())
    assert board["uid"] and board["title"] and board["panels"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for p in board["panels"]:
        pos = p["gridPos"]
        assert pos["x"] + pos["w"] <= 24, p["title"]
        assert p["targets"], p["title"]
        assert all(t["datasource"]["uid"] == "${datasource}" for t in p["targets"]), p["title"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_queries_use_only_exported_metric_names(path, exported):
    unknown = {
        (title, name)
        for title, expr in dashboard_exprs(path)
        for name in metric_names(expr)
        if name not in exported
    }
    assert not unknown, f"metric names nothing in the project exports: {sorted(unknown)}"


def test_dashboards_show_every_contract_gpu_and_cost_metric():
    used = {name for path in DASHBOARDS for _t, expr in dashboard_exprs(path) for name in metric_names(expr)}
    missing = ({f.name for f in DCGM_FIELDS} | set(COST_CONTRACT) | {"redis_queue_depth"}) - used
    assert not missing
