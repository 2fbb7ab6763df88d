"""Drive a real CostExporter (real ledger, cost model and collector) through a replica schedule on a
settable clock, and compute what the documented formulas say its budget figures must be, independently of
the ledger's own bookkeeping.

The cluster is three g2-standard-8 nodes (one L4, 4 time-slicing slots each); every pod requests one slot,
so each stt replica costs a quarter of the node price per hour. The tts service holds one replica all along.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry

from tests.exporters.exporters_helpers import gpu_node, gpu_pod, samples, scrape
from workers.cost.exporter import ConfigWatcher, CostCollector, CostExporter
from workers.cost.ledger import Ledger, hours_left_in_month
from workers.cost.pricing import build_price_table, load_default_prices
from workers.gpu.cluster import build_inventory

NODE_PRICE = build_price_table(load_default_prices()).instance_types["g2-standard-8"].price_per_hour
REPLICA_RATE = NODE_PRICE / 4  # $/h of one replica holding one of a node's 4 slots
NODES = [gpu_node(f"gpu-l4-{i}") for i in range(3)]
FIGURES = (
    "service_cost_month_to_date",
    "budget_utilization_percentage",
    "monthly_cost_projection",
    "monthly_cost_forecast",
    "budget_forecast_utilization_percentage",
)


@dataclass
class Step:
    when: dt.datetime
    stt_replicas: int
    figures: dict[str, dict[str, float]]  # metric -> service -> value, as scraped after the update
    gpu_hours: float  # stt's total_gpu_hours (NVIDIA-L4)


def write_budgets(path: Path, stt: float, tts: float) -> None:
    path.write_text(
        "---\nservice_label: app.kubernetes.io/name\njobs_rate_window: 1m\nservices:\n"
        f"  - {{name: stt, namespace: model-serving, queue: stt, monthly_budget_usd: {stt}}}\n"
        f"  - {{name: tts, namespace: model-serving, queue: tts, monthly_budget_usd: {tts}}}\n"
    )


class Simulation:
    def __init__(self, tmp: Path, start: dt.datetime, window_s: float, stt_budget=1500.0, tts_budget=1500.0):
        self.now = start
        self.replicas = 2
        config = tmp / "cost.yml"
        write_budgets(config, stt_budget, tts_budget)
        ledger = Ledger()
        ledger.forecast_window_seconds = window_s
        self.exporter = CostExporter(
            watcher=ConfigWatcher(config),
            ledger=ledger,
            read_inventory=self._inventory,
            read_job_rates=None,
            state_file=None,  # persistence has its own tests; an fsync per step only slows this down
            max_gap_seconds=300,
            clock=lambda: self.now,
        )
        self.registry = CollectorRegistry()
        self.registry.register(CostCollector(lambda: self.exporter.published))
        self.steps: list[Step] = []

    def _inventory(self):
        pods = [gpu_pod(f"stt-a-{i}", f"gpu-l4-{i // 4}") for i in range(self.replicas)]
        pods.append(gpu_pod("tts-b-1", "gpu-l4-2", service="tts"))
        return build_inventory(NODES, pods)

    def run(self, schedule: Callable[[float], int], seconds: float, step_s: float) -> list[Step]:
        """Update every ``step_s`` seconds for ``seconds``; ``schedule(t)`` gives stt's replicas at t seconds
        from this call's start. Returns this call's steps."""
        t0, out = self.now, []
        t = 0.0
        while t <= seconds + 1e-9:
            self.now = t0 + dt.timedelta(seconds=t)
            self.replicas = schedule(t)
            self.exporter.update()
            scraped = scrape(self.registry)
            figures = {name: {lab["service"]: v for lab, v in samples(scraped, name)} for name in FIGURES}
            hours = [v for lab, v in samples(scraped, "total_gpu_hours") if lab["service"] == "stt"]
            out.append(Step(self.now, self.replicas, figures, hours[0] if hours else 0.0))
            t += step_s
        self.steps += out
        return out


def expected(steps: list[Step], window_s: float, budget: float) -> list[dict[str, float]]:
    """stt's month-to-date spend, spend share and forecast at each step, from the documented formulas:
    each interval is billed at the replicas seen at its start; month-to-date restarts at 00:00 UTC on the
    1st; forecast = month-to-date + (cost over the last window_s / window_s) x hours left, where time
    before the first step counts at the first step's rate."""
    out = []
    for k, step in enumerate(steps):
        month_start = step.when.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        lo = step.when - dt.timedelta(seconds=window_s)
        mtd = cost = 0.0
        first = steps[0]
        if lo < first.when:
            cost += first.stt_replicas * REPLICA_RATE * (first.when - lo).total_seconds() / 3600
        for a, b in itertools.pairwise(steps[: k + 1]):
            rate = a.stt_replicas * REPLICA_RATE
            seg_lo, seg_hi = max(a.when, month_start), b.when
            if seg_hi > seg_lo:
                mtd += rate * (seg_hi - seg_lo).total_seconds() / 3600
            w_lo = max(a.when, lo)
            if b.when > w_lo:
                cost += rate * (b.when - w_lo).total_seconds() / 3600
        forecast = mtd + cost / (window_s / 3600) * hours_left_in_month(step.when)
        out.append(
            {
                "mtd": mtd,
                "spent_percent": 100 * mtd / budget,
                "forecast": forecast,
                "forecast_percent": 100 * forecast / budget,
                "projection": mtd + step.stt_replicas * REPLICA_RATE * hours_left_in_month(step.when),
            }
        )
    return out
