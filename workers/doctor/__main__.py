"""python -m workers.doctor: check the metric pipeline hop by hop; JSON on stdout, exit 0 only if all pass.

Hops, in order: exporters answer -> their series are in Prometheus -> the metrics APIServices are
Available -> prometheus-adapter serves queue depth and pod GPU utilisation -> every HPA reads all its
metrics and is ScalingActive -> Alertmanager answers. The first failing hop is named with its reason.
A peer that is down, a URL that is not http(s), a server that does not speak HTTP and an answer that is not JSON
fail their hop with a reason naming the peer; they never end the doctor with a traceback. A kubeconfig that cannot
be loaded is an argument error (exit 1 with a message naming the file, no JSON).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from kubernetes import config as kube_config

from workers.doctor.hops import Pipeline, json_getter, run_all

DEFAULT_EXPORTER_METRICS = {
    "queue-exporter": ["redis_queue_depth"],
    "gpu-exporter": ["DCGM_FI_DEV_GPU_UTIL"],
    # The DCGM exporter's job and Service name on clusters (the GPU Operator's) and on the local real node.
    "nvidia-dcgm-exporter": ["DCGM_FI_DEV_GPU_UTIL"],
    "cost-exporter": ["service_cost_per_hour"],
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m workers.doctor", description=__doc__.splitlines()[0])
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--namespace", required=True)
    ap.add_argument("--service", action="append", default=[], metavar="NAME:QUEUE", required=True,
                    help="a model service and its queue; repeat per service")
    ap.add_argument("--exporter", action="append", default=[], metavar="NAME=URL",
                    help="an exporter's /metrics URL or service reference; NAME is its Prometheus job; repeat per "
                         "exporter")
    ap.add_argument("--prometheus-url", required=True,
                    help="http(s)://host:port, or service:<namespace>/<name>:<port> through the API server's proxy")
    ap.add_argument("--alertmanager-url", required=True, help="as --prometheus-url")
    ap.add_argument("--output", help="also write the JSON result to this file")
    ap.add_argument("--settle", type=float, default=0.0, metavar="SECONDS",
                    help="re-check every few seconds for up to this long before failing: a process started just "
                         "before the doctor runs is not in Prometheus until its first scrape (default 0: check once)")
    return ap.parse_args(argv)


SETTLE_INTERVAL_SECONDS = 3.0


def _pairs(values: list[str], sep: str, what: str) -> list[tuple[str, str]]:
    out = []
    for v in values:
        left, found, right = v.partition(sep)
        if not found or not left or not right:
            raise SystemExit(f"doctor: {what} {v!r} must look like LEFT{sep}RIGHT")
        out.append((left, right))
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    services = [{"name": n, "queue": q} for n, q in _pairs(args.service, ":", "--service")]
    exporters = dict(_pairs(args.exporter, "=", "--exporter"))
    try:
        api = kube_config.new_client_from_config(config_file=args.kubeconfig)
    except (OSError, ValueError, kube_config.ConfigException) as exc:  # missing, unreadable, or not a kubeconfig
        raise SystemExit(f"doctor: cannot load the kubeconfig {args.kubeconfig}: {exc}") from exc
    pipeline = Pipeline(
        namespace=args.namespace,
        services=services,
        exporters=exporters,
        exporter_metrics={k: v for k, v in DEFAULT_EXPORTER_METRICS.items() if k in exporters},
        prometheus_get=json_getter(args.prometheus_url, api),
        alertmanager_get=json_getter(args.alertmanager_url, api),
        api=api,
    )
    if args.settle < 0:
        raise SystemExit(f"doctor: --settle {args.settle} must be >= 0 seconds")
    deadline = time.monotonic() + args.settle
    attempts = 1
    result = run_all(pipeline)
    while not result["ok"] and time.monotonic() < deadline:
        left = deadline - time.monotonic()
        print(f"doctor: hop '{result['failed_hop']}' not ready ({result['reason']}); re-checking for {left:.0f} s more",
              file=sys.stderr, flush=True)
        time.sleep(min(SETTLE_INTERVAL_SECONDS, max(left, 0)))
        attempts += 1
        result = run_all(pipeline)
    result["attempts"] = attempts
    text = json.dumps(result, indent=2, sort_keys=True, default=str)
    print(text)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
    if not result["ok"]:
        print(f"doctor: FAILED at hop '{result['failed_hop']}': {result['reason']}", file=sys.stderr)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
