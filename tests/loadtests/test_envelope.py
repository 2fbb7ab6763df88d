"""The policy envelope on hand-computed trajectories.

The trajectories below are worked out by hand from Kubernetes' HPA behavior algorithm (horizontal.go:
stabilizeRecommendationWithBehaviors, convertDesiredReplicasWithBehaviorRate) for the policy table's stt entry
on the fast profile: min 2, max 8, 5 jobs per pod; up Max of (100 %, 2 pods) per 6 s, no window; down Max of
(50 %, 1 pod) per 12 s after a 30 s window; sync 2 s; tolerance 0.1.

The scripted metric: 0 jobs, 100 jobs from t=10 s (raw recommendation ceil(100/5) = 20), 0 again from t=50 s.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from loadtests.envelope import (
    Policy,
    RatePolicy,
    Rules,
    Timing,
    down_floor,
    judge,
    pod_metric_recommendation,
    policy_from_inventory,
    recommend,
    simulate,
    trajectories,
    up_limit,
)

TABLE = Policy(
    "stt",
    2,
    8,
    5.0,
    Rules(0, (RatePolicy("Percent", 100, 6), RatePolicy("Pods", 2, 6))),
    Rules(30, (RatePolicy("Percent", 50, 12), RatePolicy("Pods", 1, 12))),
    0.1,
    10,
)
TIMING = Timing(sync_s=2.0, lag_s=(0.0, 2.5), margin_s=0.5)
PUSH, DRAIN, END = 10.0, 50.0, 130.0


def usage_at(t: float) -> float:
    return 100.0 if PUSH <= t < DRAIN else 0.0


def usage_samples(step: float = 0.5) -> list[tuple[float, float]]:
    return [(i * step, usage_at(i * step)) for i in range(int(END / step) + 1)]


def sampled(steps: list[tuple[float, int]], step: float = 0.5) -> list[tuple[float, int]]:
    """What a sampler reading the Deployment every ``step`` seconds sees of a step trajectory."""
    out = []
    for i in range(int(END / step) + 1):
        t = i * step
        out.append((t, [r for s, r in steps if s <= t][-1]))
    return out


# ---------------------------------------------------------------------------------- the policy itself


def test_policy_comes_from_the_inventory_scaled_like_the_autoscaling_template():
    policy, timing = policy_from_inventory("stt")
    assert policy == TABLE
    # local_cluster's fast profile: 2 s sync; prometheus_stack's fast profile: 2 s scrape (+0.5 s query).
    assert timing.sync_s == 2.0
    assert timing.lag_s == (0.0, 2.5)


def test_kubernetes_arithmetic():
    assert recommend(100, 5, 2, 0.1) == 20
    assert recommend(10.5, 5, 2, 0.1) == 2  # ratio 1.05: inside the tolerance, keep current
    assert recommend(11.5, 5, 2, 0.1) == 3  # ratio 1.15: ceil(11.5 / 5)
    # On the edge, as Kubernetes 1.35 computes it ((1 - 0.1) <= ratio <= (1 + 0.1)): 33 / (5 x 6) is 1.1, kept; a
    # live dubbing run's HPA kept 6 replicas at 33 jobs. 27 / 30 is 0.9, kept too.
    assert recommend(33, 5, 6, 0.1) == 6
    assert recommend(27, 5, 6, 0.1) == 6
    assert recommend(34, 5, 6, 0.1) == 7
    assert pod_metric_recommendation(88, 80, 6, 0.1) == 6  # 88 / 80 = 1.1
    assert recommend(0, 5, 8, 0.1) == 0
    up = TABLE.up
    assert up_limit(up, [2, 2], 2) == 4
    assert up_limit(up, [4, 4], 4) == 8
    assert up_limit(up.flipped(), [4, 4], 4) == 6  # Min: the smaller change
    assert up_limit(Rules(0, (RatePolicy("Percent", 10, 6),)), [7], 7) == 8  # ceil(7.7): at least one pod
    down = TABLE.down
    assert down_floor(down, [8, 8], 8) == 4  # Max: the larger change (50 % beats 1 pod)
    assert down_floor(down.flipped(), [8, 8], 8) == 7
    assert down_floor(down, [3, 3], 3) == 1  # int(1.5)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (TABLE, [(0, 2), (10, 4), (16, 8), (78, 4), (90, 2)]),
        (
            replace(TABLE, up=Rules(0, (RatePolicy("Pods", 1, 6),))),
            [(0, 2), (10, 3), (16, 4), (22, 5), (28, 6), (34, 7), (40, 8), (78, 4), (90, 2)],
        ),
        (
            replace(TABLE, up=Rules(0, (RatePolicy("Percent", 10, 6),))),
            [(0, 2), (10, 3), (16, 4), (22, 5), (28, 6), (34, 7), (40, 8), (78, 4), (90, 2)],
        ),
        (
            replace(TABLE, up=TABLE.up.flipped(), down=TABLE.down.flipped()),
            [(0, 2), (10, 4), (16, 6), (22, 8), (78, 7), (90, 6), (102, 5), (114, 4), (126, 3)],
        ),
        (replace(TABLE, down=replace(TABLE.down, stabilization_s=0)), [(0, 2), (10, 4), (16, 8), (50, 4), (62, 2)]),
        (replace(TABLE, max_replicas=2), [(0, 2)]),
    ],
    ids=["table", "pods-1", "percent-10", "select-min", "stabilization-0", "max-2"],
)
def test_simulation_follows_the_controller_step_by_step(policy, expected):
    assert simulate(policy, usage_at, 2, 0.0, END, 2.0) == expected


# --------------------------------------------------------------------------------------------- judge

# What the real controller shows for the same metric: the exporter scrapes 0..2 s after the change, the HPA
# syncs 0..2 s after that, so the first step lands 3 s after the push; each later step one period after the
# one before; the down step 30 s after the last sync that saw the backlog, once the window has passed.
# The reaction budget: push + metric age (2.5 s) + one sync (2 s) + processing (0.5 s) = 15.0 s.
OBSERVED = {
    "table": [(0, 2), (13, 4), (19, 8), (82, 4), (94, 2)],
    "pods-1": [(0, 2), (13, 3), (19, 4), (25, 5), (31, 6), (37, 7), (43, 8), (82, 4), (94, 2)],
    "percent-10": [(0, 2), (13, 3), (19, 4), (25, 5), (31, 6), (37, 7), (43, 8), (82, 4), (94, 2)],
    "select-min": [(0, 2), (13, 4), (19, 6), (25, 8), (82, 7), (94, 6), (106, 5), (118, 4), (130, 3)],
    "stabilization-0": [(0, 2), (13, 4), (19, 8), (53, 4), (65, 2)],
    "max-2": [(0, 2)],
}


def test_the_table_policy_passes():
    verdict = judge(TABLE, TIMING, sampled(OBSERVED["table"]), usage_samples())
    assert verdict.passed, [f.to_json() for f in verdict.findings]
    # The envelope brackets every sample.
    assert all(e["lower"] <= e["observed"] <= e["upper"] for e in verdict.envelope)


def test_the_slowest_run_the_timing_allows_still_passes():
    # Every step one sync later than above (metric 2.5 s old, a missed sync): still the policy.
    late = [(0, 2), (15, 4), (21, 8), (84, 4), (96, 2)]
    verdict = judge(TABLE, TIMING, sampled(late), usage_samples())
    assert verdict.passed, [f.to_json() for f in verdict.findings]


def test_sampling_every_two_seconds_still_passes():
    verdict = judge(TABLE, TIMING, sampled(OBSERVED["table"], 2.0), usage_samples(2.0))
    assert verdict.passed, [f.to_json() for f in verdict.findings]


@pytest.mark.parametrize(
    ("name", "rule", "at", "expected", "observed"),
    [
        ("pods-1", "scale_up_late", 15.0, ">= 4", 3),
        ("percent-10", "scale_up_late", 15.0, ">= 4", 3),
        ("select-min", "select_policy", 21.5, "selectPolicy Max (scale_up_late: >= 8)", 6),
        ("stabilization-0", "scale_down_stabilization", 53.0, ">= 8", 4),
        ("max-2", "max_replicas", 15.0, "up to 8 (the inventory's maximum)", 2),
    ],
)
def test_each_wrong_policy_fails_naming_its_rule(name, rule, at, expected, observed):
    verdict = judge(TABLE, TIMING, sampled(OBSERVED[name]), usage_samples())
    assert not verdict.passed
    assert verdict.rules == [rule], [f.to_json() for f in verdict.findings]
    first = verdict.first()
    assert (first.t, first.expected, first.observed) == (at, expected, observed), first


def test_select_min_is_named_in_both_directions_and_the_message_says_which():
    verdict = judge(TABLE, TIMING, sampled(OBSERVED["select-min"]), usage_samples())
    (finding,) = verdict.findings
    assert "selectPolicy Min" in finding.message and "the inventory says Max" in finding.message
    assert verdict.notes == ["the series fits selectPolicy Min"]


def test_a_step_faster_than_the_policy_fails():
    fast = [(0, 2), (13, 8), (82, 4), (94, 2)]  # 2 -> 8 at once: 100 % of 2 is 4
    verdict = judge(TABLE, TIMING, sampled(fast), usage_samples())
    assert verdict.rules == ["scale_up_step"]
    first = verdict.first()
    assert (first.t, first.expected, first.observed) == (13.0, "<= 4", 8)


def test_a_scale_up_beyond_what_the_metric_asks_fails():
    # 12 jobs ask for ceil(12/5) = 3 replicas; going to 4 is more than the metric asks.
    usage = [(t, 12.0 if t >= PUSH else 0.0) for t, _ in usage_samples()]
    verdict = judge(TABLE, TIMING, sampled([(0, 2), (13, 4)]), usage)
    assert verdict.rules[0] == "scale_up_step"
    assert "asking 3" in verdict.first().message
    # And holding 4 when 3 are asked for is a scale-down that never came.
    assert verdict.rules == ["scale_up_step", "scale_down_late"]


def test_a_scale_down_faster_than_the_policy_fails():
    fast = [(0, 2), (13, 4), (19, 8), (82, 2)]  # 8 -> 2 in one step: 50 % of 8 is 4
    verdict = judge(TABLE, TIMING, sampled(fast), usage_samples())
    assert verdict.rules == ["scale_down_step"]
    assert (verdict.first().t, verdict.first().expected) == (82.0, ">= 4")


def test_a_scale_down_slower_than_the_policy_fails():
    slow = [(0, 2), (13, 4), (19, 8), (100, 4), (112, 2)]  # 18 s late
    verdict = judge(TABLE, TIMING, sampled(slow), usage_samples())
    assert verdict.rules == ["scale_down_late"]
    assert verdict.first().observed == 8


def test_bounds_come_from_the_inventory():
    above = [(0, 2), (13, 4), (19, 8), (25, 9), (82, 4), (94, 2)]
    verdict = judge(TABLE, TIMING, sampled(above), usage_samples())
    assert "max_replicas" in verdict.rules
    below = [(0, 2), (13, 4), (19, 8), (82, 4), (94, 1)]
    verdict = judge(TABLE, TIMING, sampled(below), usage_samples())
    assert "min_replicas" in verdict.rules


def test_trajectories_bracket_the_observed_run():
    runs = trajectories(TABLE, TIMING, usage_samples(), 2, 0.0, END)
    earliest, latest = runs["earliest"], runs["latest"]
    assert earliest[:3] == [(0.0, 2), (10.0, 4), (16.0, 8)]
    # Latest: the metric 2.5 + 2 + 0.5 s old, decisions on the 2 s grid.
    assert latest[:3] == [(0.0, 2), (16.0, 4), (22.0, 8)]
    assert [r for _, r in earliest] == [2, 4, 8, 4, 2] == [r for _, r in latest]


# ------------------------------------------------------------------ the pipeline's timing, many times over

WRONG = {
    "pods-1": (replace(TABLE, up=Rules(0, (RatePolicy("Pods", 1, 6),))), "scale_up_late"),
    "percent-10": (replace(TABLE, up=Rules(0, (RatePolicy("Percent", 10, 6),))), "scale_up_late"),
    "select-min": (replace(TABLE, up=TABLE.up.flipped(), down=TABLE.down.flipped()), "select_policy"),
    "stabilization-0": (replace(TABLE, down=replace(TABLE.down, stabilization_s=0)), "scale_down_stabilization"),
    "max-2": (replace(TABLE, max_replicas=2), "max_replicas"),
}


def pipeline_run(policy: Policy, seed: int, sample_s: float = 0.5) -> tuple[list, list]:
    """The controller (``simulate``) behind the real pipeline's delays, with phases drawn from ``seed``: the
    exporter reads Redis at its scrapes (every 2 s), the query takes up to 0.3 s, the HPA syncs every 2 s
    (+ up to 0.1 s of processing) from a random phase, the sampler reads every ``sample_s`` from another."""
    import random

    rng = random.Random(seed)
    scrape_phase, sync_phase, sample_phase = rng.uniform(0, 2), rng.uniform(0, 2), rng.uniform(0, sample_s)
    query = rng.uniform(0, 0.3)
    sync = 2.0 + rng.uniform(0, 0.1)

    def seen(t: float) -> float:  # the value the adapter serves at t: the last scrape before the query
        k = (t - query - scrape_phase) // 2.0
        return usage_at(scrape_phase + 2.0 * k)

    steps = [(0.0, 2), *simulate(policy, seen, 2, sync_phase, END, sync)]
    times = [sample_phase + i * sample_s for i in range(int((END - 1) / sample_s))]
    observed = [(t, [r for s, r in steps if s <= t][-1]) for t in times]
    return observed, [(t, usage_at(t)) for t in times]


@pytest.mark.parametrize("seed", range(12))
def test_the_table_passes_whatever_the_pipeline_phases(seed):
    observed, usage = pipeline_run(TABLE, seed)
    verdict = judge(TABLE, TIMING, observed, usage)
    assert verdict.passed, [f.to_json() for f in verdict.findings]
    observed2, usage2 = pipeline_run(TABLE, seed, sample_s=2.0)  # the checker's 2 s sampling
    assert judge(TABLE, TIMING, observed2, usage2).passed


@pytest.mark.parametrize("name", sorted(WRONG))
@pytest.mark.parametrize("seed", range(6))
def test_each_wrong_policy_is_named_whatever_the_pipeline_phases(name, seed):
    policy, rule = WRONG[name]
    observed, usage = pipeline_run(policy, seed)
    verdict = judge(TABLE, TIMING, observed, usage)
    assert verdict.rules[:1] == [rule], [f.to_json() for f in verdict.findings][:3]
