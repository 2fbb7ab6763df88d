"""A second run of site.yml on the running local target changes nothing (the stack is up before pytest)."""

from __future__ import annotations

import re

from tests.e2e import stack


def test_second_site_run_reports_no_change():
    stack.require_stack()
    run = stack.run_playbook("site.yml", timeout=1200)
    assert run.returncode == 0, run.stdout[-4000:]
    recap = re.search(r"localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", run.stdout)
    assert recap, run.stdout[-2000:]
    changed, task = [], None
    for line in run.stdout.splitlines():
        if line.startswith("TASK ["):
            task = line[6:line.rfind("]")]
        elif line.startswith("changed:"):
            changed.append(task)
    assert int(recap.group(2)) == 0, f"site.yml changed something on a second run: {recap.group(0)}; {changed}"
    assert "kubeconfig:" in run.stdout
