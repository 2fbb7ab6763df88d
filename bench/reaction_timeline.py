"""Benchmark of the scaling reaction: runs a load-test scenario (default ``reaction``) again and again against a
live target and gives, per service and hop, the median and p95 of each hop's delay (from the hop before it) and
of the whole path from "queue over the threshold" to "first job finished by the new replica".

Not a timed test: it needs the live stack, several minutes per run, and nothing else using the stack
(take the shared lock around it). Each run is a full ``python -m loadtests.run`` with its report kept.

    flock /tmp/harness-live.lock scripts/in-venv python bench/reaction_timeline.py --runs 6 --record
    scripts/in-venv python bench/reaction_timeline.py --from-reports <dir>/run-*/report.json   # aggregate only

The figure a default pipeline would give (1 min scrape interval, 15 s HPA sync period) is computed, not
measured: a change in Redis waits for the next scrape (uniform over the interval), the adapter queries
Prometheus on each request, and the HPA reads it at its next sync (uniform over the period); the sum of the
two uniform waits has the median and p95 given. The same formula for the inventory's own profile is shown next
to the measured figure as a check of the model.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib

from loadtests.envelope import DEFAULT_INVENTORY, policy_from_inventory
from loadtests.expectations import percentile
from loadtests.timeline import HOPS


def uniform_sum_quantile(a: float, b: float, q: float) -> float:
    """The q-quantile of U(0, a) + U(0, b) (a trapezoid; a triangle when a == b)."""
    if a < b:
        a, b = b, a
    if b == 0:
        return a * q
    # CDF: s^2/(2ab) on [0, b]; (2s - b)/(2a) on [b, a]; 1 - (a + b - s)^2/(2ab) on [a, a + b].
    if q <= b / (2 * a):
        return (2 * a * b * q) ** 0.5
    if q <= 1 - b / (2 * a):
        return (2 * a * q + b) / 2
    return a + b - (2 * a * b * (1 - q)) ** 0.5


def metric_path(scrape_s: float, sync_s: float) -> dict[str, float]:
    """Queue over the threshold -> HPA desired replicas through scrape + sync waits: median and p95."""
    return {"median": uniform_sum_quantile(scrape_s, sync_s, 0.5), "p95": uniform_sum_quantile(scrape_s, sync_s, 0.95)}


def collect(reports: list[dict]) -> dict[str, dict[str, list[float]]]:
    """service -> hop (and 'metric_path', 'total') -> the delays seen over the runs."""
    out: dict[str, dict[str, list[float]]] = {}
    for report in reports:
        for svc, tl in ((report.get("reaction") or {}).get("services") or {}).items():
            if tl.get("error"):
                continue
            row = out.setdefault(svc, {})
            hops = {h["hop"]: h for h in tl["hops"]}
            for name in HOPS[1:]:
                if hops[name].get("since_previous_s") is not None:
                    row.setdefault(name, []).append(hops[name]["since_previous_s"])
            first, hpa = hops["queue_over_threshold"].get("t"), hops["hpa_desired"].get("t")
            if first is not None and hpa is not None:
                row.setdefault("metric_path", []).append(hpa - first)
            if tl.get("total_s") is not None:
                row.setdefault("total", []).append(tl["total_s"])
    return out


def rows(data: dict[str, dict[str, list[float]]]) -> list[list[object]]:
    labels = {
        "metric_path": "queue over threshold -> HPA desired (hops 2-4)",
        "total": "queue over threshold -> first job on the new pod",
    }
    out = []
    for svc in sorted(data):
        for name in (*HOPS[1:], "metric_path", "total"):
            values = data[svc].get(name) or []
            if not values:
                out.append([svc, labels.get(name, name), 0, "-", "-", "-", "-"])
                continue
            out.append(
                [
                    svc,
                    labels.get(name, name),
                    len(values),
                    round(percentile(values, 50), 2),
                    round(percentile(values, 95), 2),
                    round(min(values), 2),
                    round(max(values), 2),
                ]
            )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--scenario", default="reaction")
    p.add_argument("--profile", default="fast", help="label for the record (the target's profile)")
    p.add_argument("--inventory", type=Path, default=DEFAULT_INVENTORY)
    p.add_argument(
        "--output-dir",
        type=Path,
        default=Path(os.environ.get("HARNESS_STATE_DIR") or Path.home() / ".local/state/gpu-serving-harness/local")
        / "loadtests"
        / f"reaction-bench-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}",
    )
    p.add_argument("--from-reports", nargs="*", type=Path, help="aggregate these report.json files; run nothing")
    p.add_argument("--default-scrape-s", type=float, default=60.0)
    p.add_argument("--default-sync-s", type=float, default=15.0)
    p.add_argument("--record", action="store_true", help="write the table into docs/performance.md")
    p.add_argument("runner_args", nargs="*", help="after --: more arguments for python -m loadtests.run")
    args = p.parse_args(argv)

    paths: list[Path] = list(args.from_reports or [])
    codes: list[int] = []
    if not args.from_reports:
        for i in range(args.runs):
            out = args.output_dir / f"run-{i + 1}"
            began = time.monotonic()
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "loadtests.run",
                    "--scenario",
                    args.scenario,
                    "--output-dir",
                    str(out),
                    "--no-plot",
                    *args.runner_args,
                ],
                cwd=benchlib.REPO,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
                check=False,
            )
            codes.append(done.returncode)
            print(f"run {i + 1}/{args.runs}: exit {done.returncode} in {time.monotonic() - began:.0f} s -> {out}")
            paths.append(out / "report.json")
    reports = []
    for path in paths:
        try:
            reports.append(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            print(f"skipped {path}: {exc}")
    data = collect(reports)
    policy, timing = policy_from_inventory("stt", args.inventory)
    scrape = timing.lag_s[1] - 0.5
    own = metric_path(scrape, timing.sync_s)
    default = metric_path(args.default_scrape_s, args.default_sync_s)
    headers = ["service", "hop (delay from the hop before)", "runs", "median s", "p95 s", "min s", "max s"]
    body = benchlib.table(headers, rows(data))
    body += (
        f"\n\n{len(reports)} reports ({sum(1 for r in reports if r.get('passed'))} passed); threshold: queue depth "
        f"above min x per-pod target x 1.1 (stt: {policy.min_replicas} x {policy.target_per_pod:g} x 1.1).\n\n"
        f"Computed, not measured (scrape wait + HPA sync wait, each uniform; prometheus-adapter queries on each "
        f"request): queue over threshold -> HPA desired with this profile's {scrape:g} s scrape and "
        f"{timing.sync_s:g} s sync: median {own['median']:.1f} s, p95 {own['p95']:.1f} s; with a default pipeline "
        f"({args.default_scrape_s:g} s scrape, {args.default_sync_s:g} s sync): median {default['median']:.1f} s, "
        f"p95 {default['p95']:.1f} s. The pod, container, readiness and first-job hops do not depend on those "
        f"settings."
    )
    print(body)
    if codes and any(c not in (0, 1) for c in codes):
        print(f"some runs could not be made (exit codes {codes})")
    if args.record:
        cmd = f"python bench/reaction_timeline.py --runs {args.runs} --scenario {args.scenario}"
        if args.from_reports:
            cmd = f"python bench/reaction_timeline.py --from-reports <{len(paths)} reports>"
        benchlib.record(f"reaction-{args.profile}", cmd, body)
    return 0 if reports else 1


if __name__ == "__main__":
    raise SystemExit(main())
