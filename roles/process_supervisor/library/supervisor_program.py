#!/usr/bin/python
"""Ansible module: bring one supervisord program to a state in one call, over supervisord's XML-RPC socket.

Why a module of the role's own: the role used to spend three tasks per program (a `supervisorctl status`
poll, a fail task, community.general.supervisorctl), and each supervisorctl run starts a Python interpreter
that imports supervisor's client; with a dozen programs that was more than half of a `site.yml` run that
changes nothing. This module speaks the same XML-RPC interface supervisorctl uses (supervisor's
`getProcessInfo`, `startProcess`, `stopProcess`), through the unix socket, with the standard library only.
"""

from __future__ import annotations

import http.client
import socket
import time
import xmlrpc.client
from collections import deque

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: supervisor_program
short_description: Wait out STARTING/BACKOFF, then start or stop one supervisord program
options:
  socket: {description: supervisord's unix socket, type: path, required: true}
  name: {description: the program's name, type: str, required: true}
  state: {description: wanted state, type: str, choices: [started, stopped], default: started}
  settle_timeout: {description: seconds to wait while the program is STARTING or BACKOFF, type: int, default: 60}
  log_file: {description: the program's log; its last lines go into a failure message, type: path}
"""

SETTLING = {"STARTING", "BACKOFF"}


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path: str, timeout: float = 30.0):
        super().__init__()
        self._path, self._timeout = path, timeout

    def make_connection(self, host):  # the host is unused: the connection goes to the socket
        return _UnixConnection(self._path, self._timeout)


def _tail(path: str | None, lines: int = 15) -> str:
    if not path:
        return ""
    try:
        with open(path, errors="replace") as f:
            return "".join(deque(f, maxlen=lines)).strip()
    except OSError as exc:
        return f"(log unreadable: {exc})"


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "socket": {"type": "path", "required": True},
            "name": {"type": "str", "required": True},
            "state": {"type": "str", "choices": ["started", "stopped"], "default": "started"},
            "settle_timeout": {"type": "int", "default": 60},
            "log_file": {"type": "path"},
        },
        supports_check_mode=True,
    )
    p = module.params
    name, wanted = p["name"], p["state"]
    server = xmlrpc.client.ServerProxy("http://localhost", transport=_UnixTransport(p["socket"]))

    def info() -> dict:
        try:
            return server.supervisor.getProcessInfo(name)
        except xmlrpc.client.Fault as exc:
            module.fail_json(msg=f"supervisord has no program {name!r} ({exc.faultString}): is its definition "
                                 "in conf.d and applied with `supervisorctl update`?")
        except OSError as exc:
            module.fail_json(msg=f"supervisord does not answer on {p['socket']}: {exc}")
        raise AssertionError  # fail_json exits

    def failed(state: str, why: str) -> None:
        log = _tail(p["log_file"])
        module.fail_json(
            msg=f"supervised program {name} is {state}, not {'RUNNING' if wanted == 'started' else 'STOPPED'} "
                f"({why}); the last lines of {p['log_file'] or 'its log'}:\n{log}",
            state=state)

    def change(call, state: str) -> None:
        """Start or stop the program (in check mode only say so) and exit with its new state."""
        if module.check_mode:
            module.exit_json(changed=True, state=state)
        try:
            call(name, True)
        except xmlrpc.client.Fault as exc:
            failed(info()["statename"], exc.faultString)
        module.exit_json(changed=True, state=info()["statename"])

    current = info()
    deadline = time.monotonic() + p["settle_timeout"]
    # A program (re)started by `supervisorctl update` is STARTING for startsecs and BACKOFF between failed
    # tries; starting it then would fail with a misleading "already started".
    while current["statename"] in SETTLING and time.monotonic() < deadline:
        time.sleep(0.5)
        current = info()
    state = current["statename"]
    if wanted == "started":
        if state == "RUNNING":
            module.exit_json(changed=False, state=state, pid=current["pid"])
        spawnerr = current.get("spawnerr") or ""
        if state in SETTLING:
            failed(state, f"still {state} after {p['settle_timeout']}s" + (f": {spawnerr}" if spawnerr else ""))
        if state == "FATAL":
            failed(state, spawnerr or "supervisord gave up starting it")
        change(server.supervisor.startProcess, state)
    if state in {"STOPPED", "EXITED", "FATAL"}:
        module.exit_json(changed=False, state=state)
    change(server.supervisor.stopProcess, state)


if __name__ == "__main__":
    main()
