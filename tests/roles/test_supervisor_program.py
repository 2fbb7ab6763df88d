"""roles/process_supervisor/library/supervisor_program.py against a real supervisord (from the virtualenv).

The module replaced three tasks per program (a status poll, a fail task and community.general.supervisorctl);
these tests hold it to what those did: a running program is left alone (changed=false), a stopped one is
started (changed=true, then RUNNING), check mode changes nothing, a program that cannot run fails with its
state and the end of its log, and an unknown name or a dead socket is named.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ROOT / "roles/process_supervisor/library"
BIN = Path(sys.executable).parent


def ctl(conf: Path, *args: str) -> str:
    return subprocess.run([str(BIN / "supervisorctl"), "-c", str(conf), *args],
                          capture_output=True, text=True, timeout=60).stdout


@pytest.fixture(scope="module")
def supervisord(tmp_path_factory):
    d = tmp_path_factory.mktemp("sup")
    (d / "conf.d").mkdir()
    sock = d / "s.sock"
    conf = d / "supervisord.conf"
    conf.write_text(textwrap.dedent(f"""
        [unix_http_server]
        file={sock}
        chmod=0700
        [supervisord]
        logfile={d}/supervisord.log
        pidfile={d}/supervisord.pid
        childlogdir={d}
        [rpcinterface:supervisor]
        supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
        [supervisorctl]
        serverurl=unix://{sock}
        [program:runs]
        command=sleep 600
        startsecs=1
        [program:idle]
        command=sleep 600
        autostart=false
        startsecs=1
        [program:broken]
        command=sh -c 'echo "cannot open the model file" >&2; exit 3'
        autostart=false
        startsecs=1
        startretries=1
        redirect_stderr=true
        stdout_logfile={d}/broken.log
    """))
    subprocess.run([str(BIN / "supervisord"), "-c", str(conf)], check=True, timeout=60)
    deadline = time.time() + 30
    while "RUNNING" not in ctl(conf, "status", "runs") and time.time() < deadline:
        time.sleep(0.3)
    yield {"dir": d, "sock": sock, "conf": conf}
    ctl(conf, "shutdown")


def run_module(args: dict, check: bool = False) -> dict:
    """Run the module the way Ansible does, through `ansible` with the role's library on its path."""
    argstr = " ".join(f"{k}={v}" for k, v in args.items())
    cmd = [str(BIN / "ansible"), "localhost", "-c", "local", "-i", "localhost,", "-m", "supervisor_program",
           "-a", argstr, "-e", f"ansible_python_interpreter={sys.executable}"] + (["--check"] if check else [])
    env = dict(os.environ, ANSIBLE_LIBRARY=str(LIBRARY), ANSIBLE_STDOUT_CALLBACK="json",
               ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120).stdout
    # ansible.cfg's profile_tasks callback prints a timing line before the JSON document.
    doc, _ = json.JSONDecoder().raw_decode(out[out.index("{"):])
    return doc["plays"][0]["tasks"][0]["hosts"]["localhost"]


def test_a_running_program_is_left_alone(supervisord):
    r = run_module({"socket": supervisord["sock"], "name": "runs"})
    assert not r.get("failed"), r
    assert (r["changed"], r["state"]) == (False, "RUNNING")


def test_a_stopped_program_is_started_and_check_mode_changes_nothing(supervisord):
    r = run_module({"socket": supervisord["sock"], "name": "idle"}, check=True)
    assert (r["changed"], r["state"]) == (True, "STOPPED"), r
    assert "STOPPED" in ctl(supervisord["conf"], "status", "idle")
    r = run_module({"socket": supervisord["sock"], "name": "idle"})
    assert (r["changed"], r["state"]) == (True, "RUNNING"), r
    assert "RUNNING" in ctl(supervisord["conf"], "status", "idle")
    r = run_module({"socket": supervisord["sock"], "name": "idle"})
    assert r["changed"] is False, r
    r = run_module({"socket": supervisord["sock"], "name": "idle", "state": "stopped"})
    assert (r["changed"], r["state"]) == (True, "STOPPED"), r


def test_a_program_that_cannot_run_fails_with_its_log(supervisord):
    log = supervisord["dir"] / "broken.log"
    r = run_module({"socket": supervisord["sock"], "name": "broken", "log_file": log})
    assert r.get("failed"), r
    assert "broken is" in r["msg"] and "not RUNNING" in r["msg"], r["msg"]
    assert "cannot open the model file" in r["msg"], r["msg"]


def test_an_unknown_program_and_a_dead_socket_are_named(supervisord, tmp_path):
    r = run_module({"socket": supervisord["sock"], "name": "nosuch"})
    assert r.get("failed") and "no program 'nosuch'" in r["msg"], r
    r = run_module({"socket": tmp_path / "none.sock", "name": "runs"})
    assert r.get("failed") and "does not answer" in r["msg"] and "none.sock" in r["msg"], r
