"""Price table, cost model and config file of the cost exporter."""

from __future__ import annotations

import pytest
from exporters_helpers import cpu_node, gpu_node, gpu_pod

from workers.cost.config import ServiceConfig, parse_cost_config, read_cost_config
from workers.cost.model import compute_costs, cost_per_job
from workers.cost.pricing import UnpricedNode, build_price_table, load_default_prices, price_node
from workers.gpu.cluster import build_inventory, parse_node
from workers.gpu.settings import ConfigError

DEFAULTS = load_default_prices()
TABLE = build_price_table(DEFAULTS)
G2 = TABLE.instance_types["g2-standard-8"].price_per_hour
STT = ServiceConfig("stt", "model-serving", "stt", 1500.0)
TTS = ServiceConfig("tts", "model-serving", "tts", 1500.0)


def test_default_table_is_dated_sourced_and_covers_the_expected_instance_types():
    assert TABLE.as_of and TABLE.source and TABLE.currency == "USD"
    for itype in (
        "g2-standard-8",
        "a2-highgpu-1g",
        "n1-standard-4",
        "g4dn.xlarge",
        "g5.xlarge",
        "g6.xlarge",
        "p4d.24xlarge",
    ):
        assert itype in TABLE.instance_types, itype
    assert TABLE.instance_types["p4d.24xlarge"].gpus == 8
    assert "nvidia-tesla-t4" in TABLE.accelerators


def test_bundled_instance_price_is_split_per_gpu():
    node = parse_node(
        gpu_node("p4d-0", gpus=8, replicas=1, instance_type="p4d.24xlarge", product="NVIDIA-A100-SXM4-40GB")
    )
    price = price_node(TABLE, node)
    assert price.node_price_per_hour == TABLE.instance_types["p4d.24xlarge"].price_per_hour
    assert price.gpu_price_per_hour == pytest.approx(price.node_price_per_hour / 8)
    assert price.gpu_type == "NVIDIA-A100-SXM4-40GB"


def test_attached_accelerators_are_added_per_gpu():
    node = parse_node(
        gpu_node(
            "n1-0",
            gpus=2,
            replicas=1,
            instance_type="n1-standard-4",
            product="Tesla-T4",
            extra_labels={"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"},
        )
    )
    price = price_node(TABLE, node)
    machine = TABLE.instance_types["n1-standard-4"].price_per_hour
    t4 = TABLE.accelerators["nvidia-tesla-t4"].price_per_gpu_hour
    assert price.node_price_per_hour == pytest.approx(machine + 2 * t4)
    assert price.gpu_price_per_hour == pytest.approx((machine + 2 * t4) / 2)
    assert price.gpu_type == "Tesla-T4"


def test_gke_native_time_sharing_counts_physical_gpus():
    """GKE's device plugin with time-sharing: 1 physical L4 exposed as 4 nvidia.com/gpu slots, and none of NVIDIA's
    labels (no GPU feature discovery); the node is labelled with GKE's max-shared-clients-per-gpu (GKE docs,
    GPU time-sharing). The node has 1 GPU, billed once, not 4."""
    node_obj = gpu_node("gke-l4-0", gpus=1, replicas=4)
    labels = node_obj.metadata.labels
    for key in [k for k in labels if k.startswith("nvidia.com/")]:
        del labels[key]
    labels.update({
        "cloud.google.com/gke-accelerator": "nvidia-l4",
        "cloud.google.com/gke-gpu-sharing-strategy": "time-sharing",
        "cloud.google.com/gke-max-shared-clients-per-gpu": "4",
    })
    node = parse_node(node_obj)
    assert (node.gpus, node.replicas, node.slots) == (1, 4, 4)
    price = price_node(TABLE, node)
    assert price.node_price_per_hour == pytest.approx(G2)
    assert price.gpu_price_per_hour == pytest.approx(G2)


def test_unknown_instance_type_is_named_in_the_error():
    node = parse_node(gpu_node("x-0", instance_type="x9.huge"))
    with pytest.raises(UnpricedNode, match=r"node x-0: instance type 'x9.huge' is not in the price table"):
        price_node(TABLE, node)


def test_overrides_replace_entries_and_add_new_ones():
    table = build_price_table(
        DEFAULTS,
        {
            "as_of": "2026-01-01",
            "instance_types": {
                "g2-standard-8": {"price_per_hour": 0.5, "gpus": 1, "gpu_type": "NVIDIA-L4"},
                "onprem-4xl4": {"price_per_hour": 2.0, "gpus": 4, "gpu_type": "NVIDIA-L4"},
            },
        },
    )
    assert table.instance_types["g2-standard-8"].price_per_hour == 0.5
    assert table.instance_types["onprem-4xl4"].gpus == 4
    assert table.instance_types["g5.xlarge"] == TABLE.instance_types["g5.xlarge"]
    assert table.as_of == "2026-01-01" and table.source == TABLE.source


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"price_per_hour": -1}, r"instance_types\['bad'\].price_per_hour=-1: must be >= 0"),
        ({"price_per_hour": 1, "gpus": -2}, r"instance_types\['bad'\].gpus=-2: must be an integer >= 0"),
        ({"price_per_hour": 1, "cost": 2}, r"unknown keys \['cost'\]"),
        ({"gpus": 1}, "must be a mapping with price_per_hour"),
    ],
)
def test_bad_price_entries_are_rejected_with_the_value(entry, message):
    with pytest.raises(ConfigError, match=message):
        build_price_table(DEFAULTS, {"instance_types": {"bad": entry}})


def test_service_cost_is_request_share_times_node_price():
    # The local pool: g2-standard-8, 1 L4, 4 time-slicing replicas -> 4 slots per node.
    nodes = [gpu_node("gpu-l4-0"), gpu_node("gpu-l4-1"), cpu_node("system-0")]
    pods = [
        gpu_pod("stt-a-1", "gpu-l4-0"),
        gpu_pod("stt-a-2", "gpu-l4-0"),
        gpu_pod("stt-a-3", "gpu-l4-1", gpus=2),
        gpu_pod("tts-b-1", "gpu-l4-1", service="tts"),
        gpu_pod("other-1", "gpu-l4-1", service="batch"),  # not a configured service
        gpu_pod("stt-x-1", "gpu-l4-1", namespace="elsewhere"),  # right label, wrong namespace
        gpu_pod("stt-p-1", "gpu-l4-0", phase="Pending"),  # holds no slot yet
    ]
    snap = compute_costs(build_inventory(nodes, pods), TABLE, (STT, TTS), "app.kubernetes.io/name")
    assert snap.services["stt"].cost_per_hour == pytest.approx((1 + 1 + 2) / 4 * G2)
    assert snap.services["stt"].pods == 3
    assert snap.services["stt"].gpus_by_type == {"NVIDIA-L4": pytest.approx(1.0)}
    assert snap.services["tts"].cost_per_hour == pytest.approx(0.25 * G2)
    assert snap.unattributed_pods == 2
    assert [n.node for n in snap.nodes] == ["gpu-l4-0", "gpu-l4-1"]
    assert snap.nodes[0].gpu_price_per_hour == pytest.approx(G2)


def test_service_without_pods_costs_zero_and_unpriced_nodes_are_listed():
    nodes = [gpu_node("gpu-l4-0"), gpu_node("weird-0", instance_type="x9.huge")]
    pods = [gpu_pod("stt-a-1", "weird-0")]
    snap = compute_costs(build_inventory(nodes, pods), TABLE, (STT, TTS), "app.kubernetes.io/name")
    assert snap.unpriced_nodes == ("weird-0",)
    assert snap.problems == (
        "node weird-0: instance type 'x9.huge' is not in the price table; "
        "add it to cost_tracking_price_overrides",
    )
    assert snap.services["stt"].cost_per_hour == 0.0
    assert snap.services["tts"].cost_per_hour == 0.0


def test_cost_per_job_is_cost_per_second_over_jobs_per_second():
    assert cost_per_job(3.6, 0.5) == pytest.approx(0.002)
    assert cost_per_job(3.6, 0.0) is None
    assert cost_per_job(3.6, None) is None


def _cfg(**over):
    raw = {
        "service_label": "app.kubernetes.io/name",
        "jobs_rate_window": "5m",
        "services": [
            {"name": "stt", "namespace": "model-serving", "queue": "stt", "monthly_budget_usd": 1500}
        ],
    }
    raw.update(over)
    return raw


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (_cfg(services=[]), "services=\\[\\]: must be a non-empty list"),
        (
            _cfg(services=[{"name": "stt", "namespace": "model-serving", "queue": "stt"}]),
            r"services\[0\] \(stt\): missing \['monthly_budget_usd'\]",
        ),
        (
            _cfg(
                services=[
                    {"name": "stt", "namespace": "model-serving", "queue": "stt", "monthly_budget_usd": 0}
                ]
            ),
            r"services\[0\].monthly_budget_usd=0: must be > 0",
        ),
        (
            _cfg(
                services=[
                    {"name": "STT", "namespace": "model-serving", "queue": "stt", "monthly_budget_usd": 1}
                ]
            ),
            r"services\[0\].name='STT': must be a DNS label",
        ),
        (
            _cfg(services=[{"name": "stt", "namespace": "ms", "queue": "stt", "monthly_budget_usd": 1}] * 2),
            r"duplicate names \['stt'\]",
        ),
        (_cfg(jobs_rate_window="5 minutes"), "jobs_rate_window='5 minutes': must be a Prometheus duration"),
        (_cfg(budgets={}), r"unknown keys \['budgets'\]"),
    ],
)
def test_bad_config_files_are_rejected_naming_the_value(raw, message):
    with pytest.raises(ConfigError, match=message):
        parse_cost_config(raw, DEFAULTS)


def test_config_file_errors_name_the_file(tmp_path):
    path = tmp_path / "cost.yml"
    path.write_text("services: [\n")
    with pytest.raises(ConfigError, match=f"config file '{path}': not valid YAML/JSON"):
        read_cost_config(path)
    path.write_text(
        '{"services": [{"name": "stt", "namespace": "ms", "queue": "stt", "monthly_budget_usd": 9}]}'
    )
    assert read_cost_config(path).services[0].monthly_budget_usd == 9.0  # JSON is accepted too
