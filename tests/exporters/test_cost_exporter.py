"""The cost exporter's update cycle and metrics in a fresh registry, budget changes at run time
(file change and SIGHUP to a real process), and its start-up errors."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from exporters_helpers import gpu_node, gpu_pod, samples, scrape, start_cost_exporter
from prometheus_client import CollectorRegistry

from workers.cost.config import load_settings
from workers.cost.exporter import CONTRACT_METRICS, ConfigWatcher, CostCollector, CostExporter
from workers.cost.ledger import Ledger, hours_left_in_month
from workers.cost.pricing import build_price_table, load_default_prices
from workers.gpu.cluster import build_inventory
from workers.gpu.settings import ConfigError

G2 = build_price_table(load_default_prices()).instance_types["g2-standard-8"].price_per_hour
T = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)


def write_config(path, stt_budget=1500.0, tts_budget=1500.0):
    path.write_text(
        "---\nservice_label: app.kubernetes.io/name\njobs_rate_window: 1m\nservices:\n"
        f"  - {{name: stt, namespace: model-serving, queue: stt, monthly_budget_usd: {stt_budget}}}\n"
        f"  - {{name: tts, namespace: model-serving, queue: tts-queue, monthly_budget_usd: {tts_budget}}}\n"
    )
    # Make the change visible to an mtime check even within the same clock tick.
    stamp = time.time_ns() + 1_000_000_000 * (path.stat().st_mtime_ns % 7 + 1)
    os.utime(path, ns=(stamp, stamp))


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def cluster():
    """Mutable inventory: 2 stt pods on one L4 node (4 slots), 1 tts pod."""
    state = {
        "nodes": [gpu_node("gpu-l4-0"), gpu_node("gpu-l4-1")],
        "pods": [
            gpu_pod("stt-a-1", "gpu-l4-0"),
            gpu_pod("stt-a-2", "gpu-l4-0"),
            gpu_pod("tts-b-1", "gpu-l4-1", service="tts"),
        ],
        "fail": False,
    }

    def read():
        if state["fail"]:
            raise ConnectionRefusedError("apiserver down")
        return build_inventory(state["nodes"], state["pods"])

    state["read"] = read
    return state


def make_exporter(tmp_path, cluster, job_rates=None, clock=None, media_rate=None):
    cfg = tmp_path / "cost.yml"
    if not cfg.exists():
        write_config(cfg)
    return CostExporter(
        watcher=ConfigWatcher(cfg),
        ledger=Ledger(),
        read_inventory=cluster["read"],
        read_job_rates=(lambda _c: job_rates) if job_rates is not None else None,
        state_file=tmp_path / "state.json",
        max_gap_seconds=300,
        clock=clock or Clock(T),
        read_media_rate=(lambda _c: media_rate) if media_rate is not None else None,
    )


def registry_for(exporter):
    registry = CollectorRegistry()
    registry.register(CostCollector(lambda: exporter.published))
    return registry


def value(scraped, name, **labels):
    found = [v for lab, v in samples(scraped, name) if all(lab.get(k) == x for k, x in labels.items())]
    assert len(found) == 1, (name, labels, samples(scraped, name))
    return found[0]


def test_each_dubbing_stage_has_its_cost_per_dubbed_media_minute(tmp_path, cluster):
    exporter = make_exporter(tmp_path, cluster, job_rates={"stt": 0.02}, media_rate=0.5)  # 30 media min per hour
    exporter.update()
    scraped = scrape(registry_for(exporter))
    # stt: 2 GPUs at a quarter share; tts: one (the fixture's cluster): their cost per hour / 30 media minutes.
    assert value(scraped, "dubbing_cost_per_media_minute", service="stt") == pytest.approx(2 * 0.25 * G2 / 30)
    assert value(scraped, "dubbing_cost_per_media_minute", service="tts") == pytest.approx(0.25 * G2 / 30)
    # No dubbing finished in the window (rate 0) or no orchestrator (no series): no figure, not a zero.
    for rate in (0.0, None):
        idle = make_exporter(tmp_path, cluster, job_rates={}, media_rate=rate)
        idle.update()
        assert samples(scrape(registry_for(idle)), "dubbing_cost_per_media_minute") == []


def test_all_contract_metrics_with_their_labels_and_values(tmp_path, cluster):
    clock = Clock(T)
    exporter = make_exporter(tmp_path, cluster, job_rates={"stt": 0.02}, clock=clock)
    exporter.update()
    clock.now = T + dt.timedelta(minutes=4)
    exporter.update()
    scraped = scrape(registry_for(exporter))
    stt_rate = 2 * 0.25 * G2
    assert value(
        scraped, "gpu_cost_per_hour", node="gpu-l4-0", instance_type="g2-standard-8", gpu_type="NVIDIA-L4"
    ) == pytest.approx(G2)
    assert value(scraped, "service_cost_per_hour", service="stt", namespace="model-serving") == pytest.approx(
        stt_rate
    )
    assert value(
        scraped, "service_cost_per_minute", service="tts", namespace="model-serving"
    ) == pytest.approx(0.25 * G2 / 60)
    mtd = stt_rate * 4 / 60
    assert value(scraped, "service_cost_month_to_date", service="stt") == pytest.approx(mtd)
    projection = mtd + stt_rate * hours_left_in_month(clock.now)
    assert value(scraped, "monthly_cost_projection", service="stt") == pytest.approx(projection)
    # Actual spend against the budget; the forecast averages the rate over the window (default 24 h),
    # where the 20 h before the exporter's first update count at the first rate it saw (the same here).
    assert value(scraped, "budget_utilization_percentage", service="stt") == pytest.approx(mtd / 1500 * 100)
    forecast = mtd + stt_rate * hours_left_in_month(clock.now)
    assert value(scraped, "monthly_cost_forecast", service="stt") == pytest.approx(forecast)
    assert value(scraped, "budget_forecast_utilization_percentage", service="stt") == pytest.approx(
        forecast / 1500 * 100
    )
    assert value(scraped, "cost_per_job", service="stt", queue_name="stt") == pytest.approx(
        stt_rate / 3600 / 0.02
    )
    assert samples(scraped, "cost_per_job") == [
        ({"service": "stt", "queue_name": "stt"}, pytest.approx(stt_rate / 3600 / 0.02))
    ]  # tts completed no jobs: no per-job figure
    assert value(scraped, "total_gpu_hours", service="stt", gpu_type="NVIDIA-L4") == pytest.approx(
        0.5 * 4 / 60
    )
    names = {n for (n, _labels) in scraped}
    assert set(CONTRACT_METRICS) <= names
    assert json.loads((tmp_path / "state.json").read_text())["services"]["stt"]["month_to_date_usd"] == (
        pytest.approx(mtd)
    )


def test_lowering_a_budget_in_the_file_changes_utilisation_on_the_next_update(tmp_path, cluster):
    clock = Clock(T)
    exporter = make_exporter(tmp_path, cluster, clock=clock)
    exporter.update()
    clock.now = T + dt.timedelta(minutes=10)
    exporter.update()
    before = value(scrape(registry_for(exporter)), "budget_utilization_percentage", service="stt")
    assert before > 0
    write_config(tmp_path / "cost.yml", stt_budget=15.0)
    exporter.update()
    after = value(scrape(registry_for(exporter)), "budget_utilization_percentage", service="stt")
    assert after == pytest.approx(before * 100)
    assert value(scrape(registry_for(exporter)), "service_monthly_budget", service="stt") == 15.0


def test_a_broken_config_edit_keeps_the_previous_budgets(tmp_path, cluster):
    exporter = make_exporter(tmp_path, cluster)
    exporter.update()
    (tmp_path / "cost.yml").write_text("services: [{name: stt}]\n")
    exporter.update()
    scraped = scrape(registry_for(exporter))
    assert value(scraped, "cost_exporter_config_reload_success") == 0.0
    assert value(scraped, "service_monthly_budget", service="stt") == 1500.0


def test_cluster_outage_keeps_the_ledger_and_says_so(tmp_path, cluster):
    clock = Clock(T)
    exporter = make_exporter(tmp_path, cluster, clock=clock)
    exporter.update()
    clock.now = T + dt.timedelta(minutes=2)
    exporter.update()
    mtd = exporter.ledger.month_to_date("stt")
    cluster["fail"] = True
    clock.now = T + dt.timedelta(minutes=3)
    exporter.update()
    scraped = scrape(registry_for(exporter))
    assert value(scraped, "cost_exporter_cluster_read_success") == 0.0
    assert exporter.ledger.month_to_date("stt") == mtd
    cluster["fail"] = False
    clock.now = T + dt.timedelta(minutes=4)
    exporter.update()
    # The 2 minutes since the last good update are billed at the rate seen then.
    assert exporter.ledger.month_to_date("stt") == pytest.approx(mtd + 0.5 * G2 * 2 / 60)


def test_scale_up_raises_the_service_cost(tmp_path, cluster):
    exporter = make_exporter(tmp_path, cluster)
    exporter.update()
    cluster["pods"] += [gpu_pod(f"stt-a-{i}", "gpu-l4-1", minutes=i) for i in range(3, 6)]
    exporter.update()
    scraped = scrape(registry_for(exporter))
    assert value(scraped, "service_cost_per_hour", service="stt") == pytest.approx(5 * 0.25 * G2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_metric(port: int, name: str, service: str) -> float | None:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in body.splitlines():
        if line.startswith(f'{name}{{service="{service}"}} '):
            return float(line.split()[-1])
    return None


def wait_for(fn, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = fn()
            if result:
                return result
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(fn)
        time.sleep(0.2)


def test_sighup_rereads_budgets_in_a_running_exporter(tmp_path, repo_root):
    """A real exporter process; no API server, so costs come from the persisted ledger: the state file
    says stt ran at $2/h and spent $100 this month."""
    now = dt.datetime.now(dt.UTC)
    (tmp_path / "state.json").write_text(
        json.dumps(
            {
                "version": 1,
                "month": now.strftime("%Y-%m"),
                "last_update": now.isoformat(),
                "services": {"stt": {"month_to_date_usd": 100.0, "gpu_hours": {}}},
                "last_rates": {"stt": {"cost_per_hour": 2.0, "gpus_by_type": {}}},
            }
        )
    )
    config = tmp_path / "cost.yml"
    write_config(config, stt_budget=100000)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:9', insecure-skip-tls-verify: true}}]\n"
        "users: [{name: u, user: {token: t}}]\ncontexts: [{name: c, context: {cluster: k, user: u}}]\n"
    )
    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "KUBECONFIG": str(kubeconfig),
        "METRICS_PORT": str(port),
        "COST_EXPORTER_CONFIG": str(config),
        "COST_EXPORTER_STATE_FILE": str(tmp_path / "state.json"),
        # Long interval: only SIGHUP can make the change visible within the test.
        "COST_EXPORTER_INTERVAL_SECONDS": "600",
        "COST_EXPORTER_MAX_GAP_SECONDS": "600",
        "COST_EXPORTER_API_TIMEOUT_SECONDS": "1",
    }
    proc = start_cost_exporter(repo_root, env)
    try:
        before = wait_for(lambda: get_metric(port, "budget_utilization_percentage", "stt"))
        projection = get_metric(port, "monthly_cost_projection", "stt")
        assert projection == pytest.approx(100.0 + 2.0 * hours_left_in_month(now), rel=1e-3)
        assert before == pytest.approx(100.0 / 100000 * 100, rel=1e-3)  # $100 spent of $100,000
        write_config(config, stt_budget=110)
        proc.send_signal(signal.SIGHUP)
        after = wait_for(
            lambda: (v := get_metric(port, "budget_utilization_percentage", "stt")) != before and v
        )
        assert after == pytest.approx(100.0 / 110 * 100, rel=1e-3)
        assert after > 80  # BudgetThresholdExceeded territory: $100 spent of $110
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "config reloaded" in out


def test_settings_errors_name_the_variable(tmp_path):
    config = tmp_path / "cost.yml"
    write_config(config)
    kube = tmp_path / "kubeconfig"
    kube.write_text("{}")
    base = {
        "COST_EXPORTER_CONFIG": str(config),
        "COST_EXPORTER_STATE_FILE": str(tmp_path / "s.json"),
        "KUBECONFIG": str(kube),
    }
    with pytest.raises(ConfigError, match=r"COST_EXPORTER_CONFIG \(--config\) is not set"):
        load_settings([], {k: v for k, v in base.items() if k != "COST_EXPORTER_CONFIG"})
    with pytest.raises(ConfigError, match=r"COST_EXPORTER_STATE_FILE='/nonexistent/s.json': directory"):
        load_settings([], {**base, "COST_EXPORTER_STATE_FILE": "/nonexistent/s.json"})
    with pytest.raises(ConfigError, match=r"PROMETHEUS_URL='127.0.0.1:9090': must be an http\(s\) URL"):
        load_settings([], {**base, "PROMETHEUS_URL": "127.0.0.1:9090"})
    with pytest.raises(ConfigError, match=r"COST_EXPORTER_INTERVAL_SECONDS \(--interval\)='0': must be > 0"):
        load_settings([], {**base, "COST_EXPORTER_INTERVAL_SECONDS": "0"})
    clock_error = r"COST_EXPORTER_CLOCK_START \(--clock-start\)='2027-01-31 23:59': must be an ISO"
    with pytest.raises(ConfigError, match=clock_error):
        load_settings([], {**base, "COST_EXPORTER_CLOCK_START": "2027-01-31 23:59"})  # no offset: ambiguous
    with pytest.raises(ConfigError, match=r"COST_EXPORTER_CLOCK_START \(--clock-start\)='tomorrow'"):
        load_settings([], {**base, "COST_EXPORTER_CLOCK_START": "tomorrow"})
    with pytest.raises(ConfigError, match=r"COST_EXPORTER_FORECAST_WINDOW_SECONDS \(--forecast-window\)='-5'"):
        load_settings([], {**base, "COST_EXPORTER_FORECAST_WINDOW_SECONDS": "-5"})
    clocked = load_settings([], {**base, "COST_EXPORTER_CLOCK_START": "2027-01-31T23:59:50+01:00"})
    assert clocked.clock_start == dt.datetime(2027, 1, 31, 22, 59, 50, tzinfo=dt.UTC)
    assert clocked.forecast_window == 86400.0
    with pytest.raises(ConfigError, match="not set and this is not a pod"):
        load_settings([], {k: v for k, v in base.items() if k != "KUBECONFIG"})
    s = load_settings(["--prometheus-url", "http://127.0.0.1:9090/"], base)
    assert (s.port, s.bind, s.prometheus_url, s.interval) == (
        9401,
        "127.0.0.1",
        "http://127.0.0.1:9090",
        15.0,
    )


def test_bad_config_file_stops_the_exporter_with_exit_code_2(tmp_path, repo_root):
    config = tmp_path / "cost.yml"
    config.write_text(
        "services:\n  - {name: stt, namespace: model-serving, queue: stt, monthly_budget_usd: -3}\n"
    )
    kube = tmp_path / "kubeconfig"
    kube.write_text("{}")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "workers.cost_exporter",
            "--once",
            "--config",
            str(config),
            "--state-file",
            str(tmp_path / "s.json"),
            "--kubeconfig",
            str(kube),
        ],
        cwd=repo_root,
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "services[0].monthly_budget_usd=-3: must be > 0" in proc.stderr
