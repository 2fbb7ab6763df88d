"""Gateway job submissions per second under a Locust FastHttpUser load, and the gateway's CPU use.

    python bench/gateway_load.py [--service tts|stt] [--users 20] [--seconds 30] [--record]

Starts a private redis-server and `python -m workers.gateway` on free 127.0.0.1 ports (rate limit raised
out of the way), runs Locust headless for a bounded time, and reads the gateway process's CPU time from
/proc through psutil. No workers run, so jobs only queue up: this measures the API and enqueue path.
Locust shares the machine's cores with the gateway, so the figure is a floor for a dedicated host.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil
from benchlib import REPO, record, table


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - 127.0.0.1 only
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not answer in {timeout} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--service", default="tts", choices=["tts", "stt"])
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--record", action="store_true", help="write the table into docs/performance.md")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="gwbench-"))
    redis_port, gw_port = free_port(), free_port()
    procs: list[subprocess.Popen] = []
    try:
        redis_cmd = [shutil.which("redis-server") or "redis-server", "--port", str(redis_port), "--bind",
                     "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp)]
        procs.append(subprocess.Popen(redis_cmd, stdout=subprocess.DEVNULL))
        env = {**os.environ, "PYTHONPATH": str(REPO), "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
               "GATEWAY_PORT": str(gw_port), "GATEWAY_STATE_DIR": str(tmp / "state"),
               "GATEWAY_RATE_LIMIT_PER_S": "1000000", "GATEWAY_RATE_LIMIT_BURST": "1000000",
               "LOG_LEVEL": "WARNING"}
        gateway_log = open(tmp / "gateway.log", "wb")  # noqa: SIM115 - lives as long as the gateway
        gateway = subprocess.Popen([sys.executable, "-m", "workers.gateway"], env=env,
                                   stdout=subprocess.DEVNULL, stderr=gateway_log)
        procs.append(gateway)
        wait_http(f"http://127.0.0.1:{gw_port}/readyz", 60)
        audio = tmp / "a.wav"
        if args.service == "stt":
            from workers.tts.piper_backend import PiperBackend

            voice = PiperBackend(None, "cpu")
            voice.load()
            audio.write_bytes(voice.synthesize("One short sentence.", "default").wav_bytes())
        ps = psutil.Process(gateway.pid)
        cpu_before = ps.cpu_times()
        started = time.monotonic()
        locust_env = {**env, "BENCH_API_KEY_FILE": str(tmp / "state" / "first-api-key"),
                      "BENCH_SERVICE": args.service, "BENCH_AUDIO": str(audio)}
        subprocess.run([sys.executable, "-m", "locust", "-f", str(REPO / "bench" / "gateway_locustfile.py"),
                        "--headless", "-u", str(args.users), "-r", str(args.users), "-t", f"{args.seconds}s",
                        "--host", f"http://127.0.0.1:{gw_port}", "--csv", str(tmp / "locust"),
                        "--only-summary", "--loglevel", "WARNING"], env=locust_env, check=False,
                       stdout=subprocess.DEVNULL)
        elapsed = time.monotonic() - started
        cpu_after = ps.cpu_times()
        cpu_s = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
        with open(tmp / "locust_stats.csv", newline="") as handle:
            stats = {row["Name"]: row for row in csv.DictReader(handle)}
        total = stats["Aggregated"]
        requests, failures = int(total["Request Count"]), int(total["Failure Count"])
        rps = float(total["Requests/s"])
        row = [args.service, args.users, args.seconds, requests, failures, round(rps, 1),
               total["50%"], total["95%"], round(cpu_s / elapsed, 2),
               round(cpu_s / max(requests, 1) * 1000, 2)]
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(timeout=20)
    out = table(["service", "users", "s", "requests", "failures", "submissions/s", "p50 ms", "p95 ms",
                 "gateway CPU (cores)", "gateway CPU ms/request"], [row])
    print(out)
    if args.record:
        record(f"gateway-{args.service}", f"python bench/gateway_load.py --service {args.service} "
               f"--users {args.users} --seconds {args.seconds}", out)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
