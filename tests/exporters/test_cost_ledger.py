"""Month-to-date spend, projections and persistence of the cost ledger."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from workers.cost.ledger import Ledger, Rate, StateFileError, hours_left_in_month

UTC = dt.UTC
T = dt.datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
L4 = "NVIDIA-L4"


def minutes(n: float) -> dt.timedelta:
    return dt.timedelta(minutes=n)


def test_interval_is_billed_at_the_rate_that_held_during_it():
    ledger = Ledger()
    ledger.advance(T, {"stt": Rate(6.0, {L4: 2.0})}, max_gap_seconds=300)
    assert ledger.month_to_date("stt") == 0.0  # nothing has elapsed yet
    ledger.advance(T + minutes(2), {"stt": Rate(60.0, {L4: 4.0})}, max_gap_seconds=300)
    assert ledger.month_to_date("stt") == pytest.approx(6.0 * 2 / 60)  # old rate for the 2 min
    ledger.advance(T + minutes(3), {"stt": Rate(0.0)}, max_gap_seconds=300)
    assert ledger.month_to_date("stt") == pytest.approx(0.2 + 60.0 / 60)
    assert ledger.gpu_hours("stt") == {L4: pytest.approx(2.0 * 2 / 60 + 4.0 / 60)}


def test_projection_is_month_to_date_plus_current_rate_times_hours_left():
    ledger = Ledger()
    ledger.advance(T, {"stt": Rate(10.0)}, max_gap_seconds=300)
    ledger.advance(T + minutes(3), {"stt": Rate(2.0)}, max_gap_seconds=300)
    now = T + minutes(3)
    # March has 31 days: from the 10th 12:03 to April 1st 00:00.
    left = (dt.datetime(2026, 4, 1, tzinfo=UTC) - now).total_seconds() / 3600
    assert hours_left_in_month(now) == pytest.approx(left)
    assert ledger.projection("stt", now) == pytest.approx(0.5 + 2.0 * left)
    assert ledger.projection("unknown", now) == 0.0


def test_gaps_longer_than_max_gap_are_billed_only_up_to_max_gap():
    ledger = Ledger()
    ledger.advance(T, {"stt": Rate(6.0)}, max_gap_seconds=300)
    ledger.advance(T + minutes(60), {"stt": Rate(6.0)}, max_gap_seconds=300)
    assert ledger.month_to_date("stt") == pytest.approx(6.0 * 5 / 60)


def test_month_boundary_starts_a_new_month_to_date_but_keeps_gpu_hours():
    end = dt.datetime(2026, 4, 1, tzinfo=UTC)
    ledger = Ledger()
    ledger.advance(end - minutes(50), {"stt": Rate(6.0, {L4: 1.0})}, max_gap_seconds=3600)
    ledger.advance(end - minutes(2), {"stt": Rate(6.0, {L4: 1.0})}, max_gap_seconds=3600)
    assert ledger.month_to_date("stt") == pytest.approx(4.8)
    ledger.advance(end + minutes(3), {"stt": Rate(6.0, {L4: 1.0})}, max_gap_seconds=3600)
    assert ledger.month == "2026-04"
    assert ledger.month_to_date("stt") == pytest.approx(6.0 * 3 / 60)  # only April's 3 minutes
    assert ledger.gpu_hours("stt") == {L4: pytest.approx(53 / 60)}  # all 53 minutes


def test_restart_continues_from_the_state_file(tmp_path):
    state = tmp_path / "cost-state.json"
    ledger = Ledger.load(state)  # no file yet: a fresh ledger
    ledger.advance(T, {"stt": Rate(6.0, {L4: 1.0})}, max_gap_seconds=900)
    ledger.advance(T + minutes(10), {"stt": Rate(6.0, {L4: 1.0})}, max_gap_seconds=900)
    ledger.save(state)
    assert ledger.month_to_date("stt") == pytest.approx(1.0)

    restarted = Ledger.load(state)
    assert restarted.month_to_date("stt") == pytest.approx(1.0)
    # Down for 2 minutes: billed at the last known rate, on top of what was saved.
    restarted.advance(T + minutes(12), {"stt": Rate(6.0, {L4: 1.0})}, max_gap_seconds=300)
    assert restarted.month_to_date("stt") == pytest.approx(1.2)
    assert restarted.gpu_hours("stt") == {L4: pytest.approx(12 / 60)}
    assert [p.name for p in tmp_path.iterdir()] == ["cost-state.json"]  # no temporary files left


def test_an_unreadable_state_file_is_an_error_not_a_silent_reset(tmp_path):
    state = tmp_path / "cost-state.json"
    state.write_text("{not json")
    with pytest.raises(StateFileError, match="move it aside"):
        Ledger.load(state)
    state.write_text(json.dumps({"version": 99}))
    with pytest.raises(StateFileError, match="state version 99"):
        Ledger.load(state)


def test_the_forecast_averages_the_window_and_survives_a_restart(tmp_path):
    """An hour-long window: 50 minutes at $6/h then 10 minutes at $60/h average to $15/h; the rate
    history is in the state file, so a restarted exporter forecasts the same."""
    ledger = Ledger(forecast_window_seconds=3600)
    ledger.advance(T, {"stt": Rate(6.0)}, max_gap_seconds=300)
    for m in range(1, 51):
        ledger.advance(T + minutes(m), {"stt": Rate(6.0 if m < 50 else 60.0)}, max_gap_seconds=300)
    for m in range(51, 61):
        ledger.advance(T + minutes(m), {"stt": Rate(60.0)}, max_gap_seconds=300)
    now = T + minutes(60)
    assert ledger.average_rate("stt", now) == pytest.approx(15.0)
    assert ledger.forecast("stt", now) == pytest.approx(ledger.month_to_date("stt") + 15.0 * hours_left_in_month(now))
    # The instant projection sees only the current $60/h.
    assert ledger.projection("stt", now) == pytest.approx(ledger.month_to_date("stt") + 60.0 * hours_left_in_month(now))
    state = tmp_path / "cost-state.json"
    ledger.save(state)
    restarted = Ledger.load(state)
    restarted.forecast_window_seconds = 3600
    assert restarted.average_rate("stt", now) == pytest.approx(15.0)


def test_unwatched_time_in_the_window_counts_at_the_oldest_rate_seen():
    """A ledger that started 6 minutes ago (at $6/h, then 3 minutes at $60/h) does not let the burst
    dominate: the 54 unwatched minutes of the hour count at $6/h."""
    ledger = Ledger(forecast_window_seconds=3600)
    ledger.advance(T, {"stt": Rate(6.0)}, max_gap_seconds=300)
    ledger.advance(T + minutes(3), {"stt": Rate(60.0)}, max_gap_seconds=300)
    ledger.advance(T + minutes(6), {"stt": Rate(60.0)}, max_gap_seconds=300)
    assert ledger.average_rate("stt", T + minutes(6)) == pytest.approx((57 * 6.0 + 3 * 60.0) / 60)
    assert Ledger(forecast_window_seconds=3600).average_rate("stt", T) == 0.0


def test_a_version_1_state_file_is_read_with_an_empty_rate_history(tmp_path):
    state = tmp_path / "cost-state.json"
    state.write_text(
        json.dumps(
            {
                "version": 1,
                "month": "2026-03",
                "last_update": T.isoformat(),
                "services": {"stt": {"month_to_date_usd": 12.5, "gpu_hours": {L4: 3.0}}},
                "last_rates": {"stt": {"cost_per_hour": 2.0, "gpus_by_type": {L4: 1.0}}},
            }
        )
    )
    ledger = Ledger.load(state)
    assert ledger.month_to_date("stt") == 12.5
    assert ledger.average_rate("stt", T) == pytest.approx(2.0)  # nothing watched yet: the last rate
    ledger.save(state)
    assert json.loads(state.read_text())["version"] == 2
