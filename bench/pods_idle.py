#!/usr/bin/env python3
"""Idle cost of the real node's pods per container, and of named host processes, sampled from /proc.

CPU % of one core is (utime + stime) over the window / wall time; RSS is summed over a container's processes at the
end of the window. Containers are found through their cgroup (the kubelet's cgroupfs layout,
kubepods/.../pod<uid>/<container id>) and named from the API server (namespace/pod/container); pause containers are
counted as "sandbox". Host processes are matched by a substring of their command line, so the host-process
components that the pods replace (Prometheus, Alertmanager under the harness supervisord) are measured the same way.

    bench/pods_idle.py --kubeconfig ~/.local/state/gpu-serving-harness/local/kubeconfig --window 60 \\
        [--host prometheus=/usr/bin/prometheus --host alertmanager=/usr/bin/prometheus-alertmanager]

Prints a Markdown table (and --json writes the figures).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

HZ = os.sysconf("SC_CLK_TCK")
CONTAINER_RE = re.compile(r"kubepods[^\n]*/pod([0-9a-f_-]+)/([0-9a-f]{64})")


def processes() -> dict[int, tuple[str, str]]:
    """pid -> (cmdline, cgroup text) of every process still readable."""
    out = {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            cgroup = (p / "cgroup").read_text()
        except OSError:
            continue
        out[int(p.name)] = (cmd, cgroup)
    return out


def ticks(pid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def container_names(kubectl: str, kubeconfig: str) -> dict[str, str]:
    """container id -> namespace/pod/container, from the pods' status."""
    raw = subprocess.run([kubectl, "--kubeconfig", kubeconfig, "get", "pods", "-A", "-o", "json"],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    names = {}
    for pod in json.loads(raw)["items"]:
        meta = pod["metadata"]
        for st in pod["status"].get("containerStatuses", []) + pod["status"].get("initContainerStatuses", []):
            cid = st.get("containerID", "").split("://")[-1]
            if cid:
                names[cid] = f"{meta['namespace']}/{meta['name']}/{st['name']}"
    return names


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kubeconfig", required=True)
    cache = Path(os.environ.get("HARNESS_CACHE", Path.home() / ".cache/gpu-serving-harness"))
    ap.add_argument("--kubectl", default=str(cache / "bin/kubernetes-v1.35.4/kubectl"))
    ap.add_argument("--window", type=float, default=60.0, help="seconds to sample (default 60)")
    ap.add_argument("--host", action="append", default=[], metavar="NAME=SUBSTRING",
                    help="also measure host processes whose command line contains SUBSTRING")
    ap.add_argument("--json", type=Path, help="write the figures here too")
    args = ap.parse_args(argv)
    if args.window <= 0:
        ap.error(f"--window={args.window}: must be > 0")
    hosts = []
    for h in args.host:
        name, sep, pattern = h.partition("=")
        if not sep or not name or not pattern:
            ap.error(f"--host {h!r}: expected NAME=SUBSTRING")
        hosts.append((name, pattern))

    names = container_names(args.kubectl, args.kubeconfig)
    groups: dict[str, list[int]] = defaultdict(list)
    for pid, (cmd, cgroup) in processes().items():
        if pid == os.getpid():  # this script's own command line names the patterns
            continue
        m = CONTAINER_RE.search(cgroup)
        if m:
            groups[names.get(m.group(2), "sandbox")].append(pid)
            continue
        for name, pattern in hosts:
            if pattern in cmd:
                groups[f"host: {name}"].append(pid)
    if not groups:
        print("no pod containers or host processes found: is the node up?", file=sys.stderr)
        return 1
    start = {pid: ticks(pid) for pids in groups.values() for pid in pids}
    t0 = time.monotonic()
    print(f"sampling {sum(len(p) for p in groups.values())} processes for {args.window:g}s ...", file=sys.stderr)
    time.sleep(args.window)
    wall = time.monotonic() - t0
    rows = []
    for group, pids in sorted(groups.items()):
        used = sum((ticks(p) or start[p] or 0) - (start[p] or 0) for p in pids)
        rows.append({"what": group, "processes": len(pids), "cpu_percent": round(100 * used / HZ / wall, 2),
                     "rss_mib": round(sum(rss_kib(p) for p in pids) / 1024, 1)})
    print("| container (namespace/pod/container) or host process | processes | CPU % of one core | RSS MiB |")
    print("| --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['what']} | {r['processes']} | {r['cpu_percent']:.2f} | {r['rss_mib']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps({"window_s": round(wall, 1), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
