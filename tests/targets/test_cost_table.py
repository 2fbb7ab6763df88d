"""docs/targets.md's cost table against what the gke and eks roles would create.

Each node pool (GKE) or node group (EKS) the roles render, the CPU system pool included, has its own row naming it
with its starting node count and machine type; the boot-disk row counts one disk per starting node of every pool at
the rendered size; the totals are the sums of the rows (spot: the GPU pool at the middle of its range). The prices
themselves are list prices written by hand (see the table's note), not checked here.
"""

import re

import pytest
from conftest import REPO

SECTION = "## Cost per hour at list price"


def cost_rows(target):
    text = (REPO / "docs" / "targets.md").read_text()
    table = text[text.index(SECTION):].split("\n## ", 1)[0]
    rows = []
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0] == target:
            rows.append(cells)
    return rows


def total_row(target):
    text = (REPO / "docs" / "targets.md").read_text()
    m = re.search(rf"\*\*{target} total[^|]*\*\*\s*\|\s*\|\s*"
                  r"\*\*([0-9.]+) on-demand GPU / about ([0-9.]+) spot\*\*", text)
    assert m, f"no total row for {target}"
    return float(m[1]), float(m[2])


def first_number(cell):
    m = re.match(r"([0-9]+(?:\.[0-9]+)?)", cell)
    return float(m[1]) if m else None


def pools(rendered, target):
    """(name, starting nodes, machine type, disk GB) of every pool the role would create, in its order."""
    r = rendered[target]
    if target == "gke":
        return [(b["name"], b["initialNodeCount"], b["config"]["machineType"], b["config"]["diskSizeGb"])
                for b in r["gke_node_pools"]]
    return [(g["nodegroupName"], g["scalingConfig"]["desiredSize"], g["instanceTypes"][0], g["diskSize"])
            for g in r["eks_nodegroups"]]


@pytest.mark.parametrize("target", ["gke", "eks"])
def test_every_created_pool_has_its_row(rendered, target):
    rows = cost_rows(target)
    for name, nodes, machine, _ in pools(rendered, target):
        named = [r for r in rows if f"`{name}`" in r[1]]
        assert len(named) == 1, f"{target}: pool {name} has {len(named)} rows in the cost table"
        assert f"{nodes} x {machine}" in named[0][1], (target, name, named[0][1])


@pytest.mark.parametrize("target", ["gke", "eks"])
def test_one_boot_disk_per_starting_node_of_every_pool(rendered, target):
    created = pools(rendered, target)
    sizes = {disk for *_, disk in created}
    assert len(sizes) == 1, f"{target}: pools with different disk sizes {sizes}: give each its own row"
    wanted = f"{sum(nodes for _, nodes, _, _ in created)} x {sizes.pop()} GB"
    disks = [r for r in cost_rows(target) if " GB " in r[1] + " " and "PVC" not in r[1]]
    assert len(disks) == 1 and wanted in disks[0][1], (target, wanted, disks)


@pytest.mark.parametrize("target", ["gke", "eks"])
def test_totals_are_the_sums_of_the_rows(target):
    rows = cost_rows(target)
    on_demand = sum(first_number(r[2]) or 0 for r in rows)
    gpu = [r for r in rows if "per GPU node" in r[1]]
    assert len(gpu) == 1, target
    low, high = (float(x) for x in re.findall(r"[0-9.]+", gpu[0][3]))
    spot = on_demand - first_number(gpu[0][2]) + (low + high) / 2
    want_on_demand, want_spot = total_row(target)
    assert abs(on_demand - want_on_demand) < 0.006, (target, on_demand, want_on_demand)
    assert abs(spot - want_spot) < 0.006, (target, spot, want_spot)
