"""Workers named by an earlier run's process file are stopped only when pid, start time and command line
all still match; a process that merely reuses the pid is left alone."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pod_runner_testlib import pid_alive, wait_for

from workers.pod_runner import stale

# Exits 0 on SIGTERM after leaving a marker, as a worker finishing its job would.
PROGRAM = ("import pathlib, signal, sys, time\n"
           "def term(*_):\n"
           "    pathlib.Path(sys.argv[1]).write_text('term')\n"
           "    sys.exit(0)\n"
           "signal.signal(signal.SIGTERM, term)\n"
           "pathlib.Path(sys.argv[1] + '.up').write_text('up')\n"
           "while True: time.sleep(0.1)\n")


@pytest.fixture
def orphan(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    marker = tmp_path / "terminated"
    proc = subprocess.Popen([sys.executable, "-c", PROGRAM, str(marker)], start_new_session=True)
    wait_for(lambda: Path(f"{marker}.up").exists(), 20, "the stand-in worker to start")
    yield proc, marker
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


def _record(proc: subprocess.Popen[bytes], marker: Path, **change: object) -> stale.Recorded:
    fields = {"pid": proc.pid, "create_time": stale.create_time(proc.pid),
              "argv": (sys.executable, "-c", PROGRAM, str(marker)),
              "namespace": "ns", "pod": "p", "grace_s": 5}
    return stale.Recorded(**{**fields, **change})


def test_a_recorded_worker_is_terminated_gracefully(tmp_path: Path, orphan) -> None:
    proc, marker = orphan
    path = tmp_path / "processes.json"
    stale.save(path, [_record(proc, marker)])
    assert stale.terminate(stale.load(path)) == 1
    wait_for(lambda: proc.poll() is not None, 5, "the stale worker to be reaped")
    assert proc.returncode == 0 and marker.read_text() == "term"


@pytest.mark.parametrize("change", [
    {"argv": ("/usr/bin/python3", "-c", "something else")},
    {"create_time": 1.0},
])
def test_a_reused_pid_is_left_alone(orphan, change: dict) -> None:
    proc, marker = orphan
    assert stale.terminate([_record(proc, marker, **change)]) == 0
    assert pid_alive(proc.pid) and not marker.exists()


def test_an_unreadable_process_file_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "processes.json"
    path.write_text("{not json")
    assert stale.load(path) == []
    assert stale.load(tmp_path / "missing.json") == []
