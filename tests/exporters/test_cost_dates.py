"""The budget figures as of several dates: the 1st, the 15th, the last day of a month, 29 February, and a
run across midnight at a month's end (issue: the same 75-second surge passed or failed BudgetThreshold-
Exceeded depending on the day of the month, because the alert judged a projection of the current rate).

Expectations come from the documented formulas (tests/exporters/cost_sim.py ``expected``), not from the
exporter: spend share = month-to-date / budget; forecast = month-to-date + rate averaged over the window
x hours left."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest
from cost_sim import REPLICA_RATE, Simulation, expected
from exporters_helpers import start_cost_exporter

from tests.e2e import stack
from workers.cost.ledger import hours_left_in_month

UTC = dt.UTC
WINDOW = 8640.0  # the fast profile's forecast window (24 h / 10)
DATES = {
    "1st": dt.datetime(2026, 12, 1, 0, 30, tzinfo=UTC),
    "15th": dt.datetime(2026, 12, 15, 12, 0, tzinfo=UTC),
    "last day": dt.datetime(2026, 12, 31, 21, 0, tzinfo=UTC),
    "29 February": dt.datetime(2028, 2, 29, 10, 30, tzinfo=UTC),
}


def surge(start_s: float, length_s: float = 60.0) -> callable:
    return lambda t: 8 if start_s <= t < start_s + length_s else 2


def warm_up(sim: Simulation) -> None:
    """A window's worth of the minimum (2 replicas), so the forecast's window is fully watched."""
    sim.run(lambda _t: 2, WINDOW, 180)


@pytest.mark.parametrize("name", DATES)
def test_a_surge_leaves_the_spend_alert_silent_on_any_day(tmp_path, name):
    when = DATES[name]
    sim = Simulation(tmp_path, when - dt.timedelta(seconds=WINDOW), WINDOW)
    warm_up(sim)
    steps = sim.run(surge(90), 360, 3)
    want = expected(sim.steps, WINDOW, 1500.0)[-len(steps) :]
    for step, exp in zip(steps, want, strict=True):
        got = step.figures
        assert got["service_cost_month_to_date"]["stt"] == pytest.approx(exp["mtd"], rel=1e-9, abs=1e-12)
        assert got["budget_utilization_percentage"]["stt"] == pytest.approx(exp["spent_percent"], rel=1e-9, abs=1e-12)
        assert got["monthly_cost_forecast"]["stt"] == pytest.approx(exp["forecast"], rel=1e-9)
        assert got["monthly_cost_projection"]["stt"] == pytest.approx(exp["projection"], rel=1e-9)
        # The spend alert (80%) and the forecast alert (100%) stay silent through the surge.
        assert got["budget_utilization_percentage"]["stt"] < 80
        assert got["budget_forecast_utilization_percentage"]["stt"] < 100
    # The surge moves the forecast by its share of the window only: 6 extra replicas for 60 s of 8640 s.
    before = steps[0].figures["monthly_cost_forecast"]["stt"]
    after = steps[-1].figures["monthly_cost_forecast"]["stt"]
    bump = 6 * REPLICA_RATE * 60 / WINDOW * hours_left_in_month(steps[-1].when)
    drift = 2 * REPLICA_RATE * 360 / 3600  # the minimum's own spend over the 6 minutes, minus hours gone
    assert after - before == pytest.approx(bump, abs=drift)
    if name == "1st":
        # What the old alert judged: the instant projection at the surge's peak crosses 80% on the 1st.
        peak = max(s.figures["monthly_cost_projection"]["stt"] for s in steps)
        assert 100 * peak / 1500 > 80


def test_a_sustained_rise_reaches_the_forecast_alert_when_the_window_says(tmp_path):
    """8 replicas held on the 1st with a $1000 budget: the instant projection is over 100% at once, the
    forecast crosses 100% only when the average over the window has risen enough, at the time the
    formula predicts; the spend alert stays silent."""
    start = DATES["1st"]
    sim = Simulation(tmp_path, start - dt.timedelta(seconds=WINDOW), WINDOW, stt_budget=1000.0)
    warm_up(sim)
    steps = sim.run(lambda t: 8, WINDOW, 60)
    want = expected(sim.steps, WINDOW, 1000.0)[-len(steps) :]
    crossed_at = None
    for step, exp in zip(steps, want, strict=True):
        got = step.figures["budget_forecast_utilization_percentage"]["stt"]
        assert got == pytest.approx(exp["forecast_percent"], rel=1e-9)
        assert step.figures["budget_utilization_percentage"]["stt"] < 80
        if got > 100 and crossed_at is None:
            crossed_at = (step.when - start).total_seconds()
    assert 100 * steps[0].figures["monthly_cost_projection"]["stt"] / 1000 > 100
    # Average rate needed: budget / hours left; it rises linearly from 2 to 8 replicas over the window.
    need = 1000 / hours_left_in_month(start) / REPLICA_RATE  # replicas' worth
    predicted = (need - 2) / 6 * WINDOW
    assert crossed_at is not None
    assert crossed_at == pytest.approx(predicted, abs=2 * 60 + 0.02 * WINDOW)
    assert crossed_at > 0.5 * WINDOW


def test_midnight_at_the_month_end_restarts_month_to_date_and_counts_nothing_twice(tmp_path):
    end = dt.datetime(2027, 2, 1, tzinfo=UTC)
    start = end - dt.timedelta(minutes=10)
    sim = Simulation(tmp_path, start - dt.timedelta(seconds=WINDOW), WINDOW)
    warm_up(sim)
    steps = sim.run(lambda _t: 8, 1200, 15)  # 8 replicas from 23:50 to 00:10
    want = expected(sim.steps, WINDOW, 1500.0)[-len(steps) :]
    for step, exp in zip(steps, want, strict=True):
        assert step.figures["service_cost_month_to_date"]["stt"] == pytest.approx(exp["mtd"], rel=1e-9, abs=1e-12)
        # The forecast's window reaches back into January across the boundary.
        assert step.figures["monthly_cost_forecast"]["stt"] == pytest.approx(exp["forecast"], rel=1e-9)
    last_jan = max((s for s in steps if s.when < end), key=lambda s: s.when)
    first_feb = min((s for s in steps if s.when >= end), key=lambda s: s.when)
    mtd = "service_cost_month_to_date"
    assert first_feb.figures[mtd]["stt"] < last_jan.figures[mtd]["stt"]
    # February's spend is February's 10 minutes at 8 replicas, nothing of January's.
    assert steps[-1].figures["service_cost_month_to_date"]["stt"] == pytest.approx(8 * REPLICA_RATE * 10 / 60)
    # GPU-hours run on across the boundary: the 20 minutes counted exactly once (8 pods x 1/4 GPU).
    assert steps[-1].gpu_hours - steps[0].gpu_hours == pytest.approx(8 * 0.25 * 20 / 60)


@pytest.mark.cluster
def test_a_real_exporter_with_a_set_clock_crosses_a_month_end(tmp_path, repo_root):
    """The exporter process, its clock set to 8 s before a month's end, against the running local cluster
    (its stt pods cost money): month-to-date restarts at midnight, GPU-hours do not."""
    stack.require_stack()
    (tmp_path / "cost.yml").write_text(
        "---\nservices:\n  - {name: stt, namespace: model-serving, queue: stt, monthly_budget_usd: 1500}\n"
    )
    port = _free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "KUBECONFIG": str(stack.KUBECONFIG),
        "METRICS_PORT": str(port),
        "COST_EXPORTER_CONFIG": str(tmp_path / "cost.yml"),
        "COST_EXPORTER_STATE_FILE": str(tmp_path / "state.json"),
        "COST_EXPORTER_INTERVAL_SECONDS": "1",
        "COST_EXPORTER_CLOCK_START": "2027-01-31T23:59:52Z",
    }
    proc = start_cost_exporter(repo_root, env)
    seen: list[tuple[str, float, float]] = []  # (month, month-to-date, gpu-hours) per state file write
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and not (seen and seen[-1][0] == "2027-02" and len(seen) > 3):
            time.sleep(1)
            try:
                state = json.loads((tmp_path / "state.json").read_text())
            except (OSError, ValueError):
                continue
            svc = state["services"].get("stt", {"month_to_date_usd": 0.0, "gpu_hours": {}})
            seen.append((state["month"], svc["month_to_date_usd"], sum(svc["gpu_hours"].values())))
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert "running as of 2027-01-31T23:59:52" in out, out
    jan = [s for s in seen if s[0] == "2027-01"]
    feb = [s for s in seen if s[0] == "2027-02"]
    assert jan and feb, (seen, out[-2000:])
    assert jan[-1][1] > 0, "the stt pods cost nothing in January: is the local stack running its minimum?"
    assert feb[0][1] < jan[-1][1]  # month-to-date restarted
    assert feb[-1][2] > jan[-1][2]  # GPU-hours kept counting
    assert [s[2] for s in seen] == sorted(s[2] for s in seen)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
