"""The PNG timeline of a run, drawn from its report.json (so it can be redrawn later):

    scripts/in-venv python -m loadtests.plot <run dir>/report.json [-o timeline.png]

Panels, on one time axis (seconds since the load started): queue depth per service with the Locust users;
ready and HPA-desired replicas per service with the HPA bounds; the reaction timeline of each service's first
scale-up (one numbered marker per hop); GPU cost rate per service with budget use; alert firing spans, one row
per alert and service. Load stages shade the background of every panel; the end of the load, each scenario
action and each injected fault are vertical lines.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import Patch

SERVICE_COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown"]
STAGE_COLORS = ["#f3f3f3", "#e3ecf7"]


def _series(samples: list[dict[str, Any]], t0: float, service: str, key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for s in samples:
        value = s.get("services", {}).get(service, {}).get(key)
        if value is not None:
            xs.append(s["t"] - t0)
            ys.append(value)
    return xs, ys


def _stage_spans(report: dict[str, Any], t0: float) -> list[tuple[str, float, float]]:
    stages = report["load"].get("stages_run") or []
    end = report["load"].get("end")
    spans = []
    for i, stage in enumerate(stages):
        stop = stages[i + 1]["t"] if i + 1 < len(stages) else (end or stage["t"])
        spans.append((f"{stage['name']}\n{stage['users']} users", stage["t"] - t0, stop - t0))
    return spans


def draw(report: dict[str, Any], out: Path) -> Path:
    samples = [s for s in report.get("samples", []) if s.get("services")]
    t0 = report["load"].get("start") or (samples[0]["t"] if samples else 0.0)
    services = list(report.get("scaling") or {}) or sorted({k for s in samples for k in s["services"]})
    colors = {svc: SERVICE_COLORS[i % len(SERVICE_COLORS)] for i, svc in enumerate(services)}
    spans = report.get("alerts", {}).get("spans", {})
    alert_rows = sorted(spans)
    fig_height = 13 + 0.25 * max(0, len(alert_rows) - 4)
    fig, axes = plt.subplots(
        5,
        1,
        figsize=(13, fig_height),
        sharex=True,
        gridspec_kw={"height_ratios": [3, 3, 1.8, 2.4, max(1.4, 0.4 * len(alert_rows) + 0.6)]},
    )
    ax_q, ax_r, ax_t, ax_c, ax_a = axes
    faults = [f for f in report.get("faults") or [] if f.get("t") is not None]
    stage_spans = _stage_spans(report, t0)
    load_end = (report["load"].get("end") or t0) - t0
    for ax in axes:
        for i, (_, a, b) in enumerate(stage_spans):
            ax.axvspan(a, b, color=STAGE_COLORS[i % 2], zorder=0, lw=0)
        ax.axvline(load_end, color="black", ls="--", lw=1, zorder=1)
        for action in report.get("actions", []):
            if action.get("t") is not None:
                ax.axvline(action["t"] - t0, color="tab:red", ls=":", lw=1.2, zorder=1)
        for fault in faults:
            ax.axvline(fault["t"] - t0, color="black", ls="-.", lw=1.0, alpha=0.7, zorder=1)
        ax.grid(True, alpha=0.3)
    for fault in faults:
        ax_r.text(
            fault["t"] - t0,
            0.97,
            f" {fault['name']}" + (" (FAILED)" if fault.get("error") else ""),
            transform=ax_r.get_xaxis_transform(),
            fontsize=8,
            va="top",
            rotation=90,
        )
    for label, a, b in stage_spans:
        ax_q.text(
            (a + b) / 2,
            1.01,
            label,
            transform=ax_q.get_xaxis_transform(),
            ha="center",
            va="bottom",
            fontsize=8,
            color="dimgray",
        )
    ax_q.text(load_end, 0.97, " load end", transform=ax_q.get_xaxis_transform(), fontsize=8, va="top", rotation=90)
    for action in report.get("actions", []):
        if action.get("t") is not None:
            ax_c.text(
                action["t"] - t0,
                0.97,
                f" {action['name']}",
                transform=ax_c.get_xaxis_transform(),
                fontsize=8,
                color="tab:red",
                va="top",
                rotation=90,
            )

    # Queue depth and users.
    for svc in services:
        ax_q.plot(*_series(samples, t0, svc, "queue_depth"), color=colors[svc], lw=2, label=f"{svc} queue depth")
    ax_q.set_ylabel("queue depth (jobs)")
    users_ax = ax_q.twinx()
    ux = [s["t"] - t0 for s in samples]
    users_ax.step(
        ux,
        [s.get("users", 0) for s in samples],
        where="post",
        color="gray",
        lw=1.2,
        ls="-.",
        label="Locust users",
    )
    users_ax.set_ylabel("users")
    users_ax.set_ylim(bottom=0)
    ax_q.set_ylim(bottom=0)
    h1, l1 = ax_q.get_legend_handles_labels()
    h2, l2 = users_ax.get_legend_handles_labels()
    ax_q.legend(h1 + h2, l1 + l2, loc="upper right", fontsize=8)

    # Replicas.
    top = 1
    for svc in services:
        x, y = _series(samples, t0, svc, "ready")
        ax_r.step(x, y, where="post", color=colors[svc], lw=2, label=f"{svc} ready replicas")
        x, y = _series(samples, t0, svc, "hpa_desired")
        ax_r.step(x, y, where="post", color=colors[svc], lw=1.2, ls="--", label=f"{svc} HPA desired")
        bounds = report.get("scaling", {}).get(svc, {})
        for key in ("hpa_min", "hpa_max"):
            if bounds.get(key) is not None:
                ax_r.axhline(bounds[key], color=colors[svc], lw=0.8, ls=":", alpha=0.8)
                top = max(top, bounds[key])
        top = max([top, *y]) if y else top
    ax_r.set_ylim(0, top + 1)
    ax_r.set_ylabel("replicas")
    ax_r.legend(loc="upper right", fontsize=8, ncol=2, title="dotted: HPA min / max", title_fontsize=8)

    # Reaction timeline: one row per service, one marker per hop (numbered as in the legend).
    reaction = (report.get("reaction") or {}).get("services") or {}
    hop_names = [
        "queue > threshold (Redis)",
        "Prometheus series",
        "external metric API",
        "HPA desired",
        "pod scheduled",
        "container started",
        "worker ready",
        "first job on new pod",
    ]
    rows = [svc for svc in services if svc in reaction and not reaction[svc].get("error")]
    for row, svc in enumerate(rows):
        hops = [(i, h) for i, h in enumerate(reaction[svc]["hops"]) if h.get("t") is not None]
        xs = [h["t"] - t0 for _, h in hops]
        ax_t.plot(xs, [row] * len(xs), color=colors[svc], lw=1, marker="o", ms=5)
        for k, (i, h) in enumerate(hops):
            ax_t.annotate(
                str(i + 1),
                (h["t"] - t0, row),
                textcoords="offset points",
                xytext=(0, 6 if k % 2 == 0 else -12),
                ha="center",
                fontsize=7,
                color=colors[svc],
            )
    ax_t.set_yticks(range(len(rows)))
    ax_t.set_yticklabels([f"{svc} reaction" for svc in rows], fontsize=8)
    ax_t.set_ylim(-0.7, max(len(rows), 1) - 0.3)
    ax_t.invert_yaxis()
    ax_t.text(
        1.005,
        0.5,
        "\n".join(f"{i + 1} {n}" for i, n in enumerate(hop_names)),
        transform=ax_t.transAxes,
        fontsize=6.5,
        va="center",
        ha="left",
    )
    if not rows:
        ax_t.text(0.5, 0.5, "no reaction timeline", transform=ax_t.transAxes, ha="center", va="center", color="gray")

    # Cost.
    for svc in services:
        ax_c.plot(*_series(samples, t0, svc, "cost_per_hour"), color=colors[svc], lw=2, label=f"{svc} GPU $/h")
    ax_c.set_ylabel("GPU cost (USD/h)")
    ax_c.set_ylim(bottom=0)
    budget_ax = ax_c.twinx()
    for svc in services:
        budget_ax.plot(
            *_series(samples, t0, svc, "budget_pct"),
            color=colors[svc],
            lw=1,
            ls=":",
            label=f"{svc} budget spent %",
        )
    budget_ax.set_ylabel("budget spent, month to date (%)")
    # Up to at least 100%, so budget use sits apart from the cost lines and a breach stands out.
    budget_top = max([100.0, *(v for svc in services for v in _series(samples, t0, svc, "budget_pct")[1])])
    budget_ax.set_ylim(0, budget_top * 1.1)
    h1, l1 = ax_c.get_legend_handles_labels()
    h2, l2 = budget_ax.get_legend_handles_labels()
    ax_c.legend(h1 + h2, l1 + l2, loc="upper left", fontsize=8, ncol=2)

    # Alerts.
    expected = set(report.get("alerts", {}).get("expected_to_fire", []))
    forbidden = set(report.get("alerts", {}).get("forbidden", []))
    for row, key in enumerate(alert_rows):
        name = key.split(" / ")[0]
        color = "tab:green" if name in expected else "tab:red" if name in forbidden else "darkgray"
        ax_a.broken_barh([(a, max(b - a, 0.5)) for a, b in spans[key]], (row - 0.35, 0.7), color=color, alpha=0.8)
    ax_a.set_yticks(range(len(alert_rows)))
    ax_a.set_yticklabels(alert_rows, fontsize=8)
    ax_a.set_ylim(-0.6, max(len(alert_rows), 1) - 0.4)
    ax_a.invert_yaxis()
    ax_a.set_ylabel("alerts firing")
    ax_a.legend(
        handles=[
            Patch(color="tab:green", label="expected to fire"),
            Patch(color="tab:red", label="must not fire"),
            Patch(color="darkgray", label="other"),
        ],
        loc="lower right",
        fontsize=8,
        ncol=3,
    )
    if not alert_rows:
        ax_a.text(0.5, 0.5, "no alert fired", transform=ax_a.transAxes, ha="center", va="center", color="gray")
    ax_a.set_xlabel(
        "seconds since the load started (dashed line: load end, red dotted: scenario actions, dash-dot: faults)"
    )
    if samples:
        ax_a.set_xlim(min(0.0, samples[0]["t"] - t0), samples[-1]["t"] - t0)

    status = report.get("status", "?").upper()
    fig.suptitle(
        f"Load test '{report['scenario']['name']}' on {report.get('target', {}).get('name', 'target')}"
        f" — {report.get('started_at', '')} — {status}",
        fontsize=13,
        fontweight="bold",
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Redraw a load test's timeline PNG from its report.json")
    parser.add_argument("report", type=Path)
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args(argv)
    report = json.loads(args.report.read_text())
    out = draw(report, args.output or args.report.with_name("timeline.png"))
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
