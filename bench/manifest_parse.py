"""harness_manifests: parse time of prometheus-operator's CRDs with libyaml's parser vs PyYAML's pure-Python one.

    python bench/manifest_parse.py [--crds DIR] [--rounds 3] [--record]

The filter (roles/harness/filter_plugins/harness.py) reads every CRD file once per site.yml run and once per
molecule real_node converge. Both loaders here are the filter's own class (YAML 1.2's plain `=`), one built on
yaml.CSafeLoader and one on yaml.SafeLoader, run side by side on the same files; the objects must be equal.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

import yaml
from benchlib import record, table

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("HARNESS_CACHE", Path.home() / ".cache/gpu-serving-harness"))


def filter_module():
    sys.dont_write_bytecode = True  # leave no __pycache__ inside roles/ (the repository's scans read every file there)
    spec = importlib.util.spec_from_file_location("harness_filters", REPO / "roles/harness/filter_plugins/harness.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def default_crds() -> Path:
    found = sorted(CACHE.glob("bin/prometheus-operator-v*/crds"))
    if not found:
        raise SystemExit(f"no prometheus-operator CRDs under {CACHE}/bin: run `make provision` first, or pass --crds")
    return found[-1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--crds", type=Path, default=None, help="directory of monitoring.coreos.com_*.yaml files")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--record", action="store_true", help="write the table into docs/performance.md")
    args = p.parse_args()
    crds = args.crds or default_crds()
    files = sorted(crds.glob("monitoring.coreos.com_*.yaml"))
    if not files:
        raise SystemExit(f"{crds}: no monitoring.coreos.com_*.yaml files")
    texts = [f.read_text() for f in files]
    size_mb = sum(len(t.encode()) for t in texts) / 1e6
    harness = filter_module()
    if not hasattr(yaml, "CSafeLoader"):
        raise SystemExit("this PyYAML has no libyaml (yaml.CSafeLoader): nothing to compare")

    class PureLoader(yaml.SafeLoader):
        pass

    PureLoader.add_constructor("tag:yaml.org,2002:value", yaml.SafeLoader.construct_scalar)
    loaders = {"libyaml (CSafeLoader, the filter's)": harness._Yaml12Loader, "pure Python (SafeLoader)": PureLoader}
    assert issubclass(harness._Yaml12Loader, yaml.CSafeLoader), "the filter no longer uses libyaml"

    results, objects = {}, {}
    for _ in range(args.rounds):
        for name, loader in loaders.items():  # interleaved, so both see the same machine load
            started = time.perf_counter()
            objects[name] = [[d for d in yaml.load_all(t, Loader=loader) if d] for t in texts]
            results.setdefault(name, []).append(time.perf_counter() - started)
    first, second = objects.values()
    assert first == second, "the two loaders read different objects"
    base = statistics.median(results["pure Python (SafeLoader)"])
    rows = [[name, f"{statistics.median(times):.2f}", f"{base / statistics.median(times):.1f}x"]
            for name, times in results.items()]
    out = (f"{len(files)} CRD files, {size_mb:.1f} MB, median of {args.rounds} rounds, same objects from both:\n\n"
           + table(["loader", "seconds", "speed vs pure Python"], rows))
    print(out)
    if args.record:
        record("manifest-parse", f"python bench/manifest_parse.py --rounds {args.rounds} --record", out)


if __name__ == "__main__":
    main()
