"""Settings are checked before the runner touches anything, and a bad one names itself."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from kubernetes.client import V1ObjectMeta, V1Pod, V1PodSpec
from pod_runner_testlib import REPO

from workers.core.env import ConfigError, Settings
from workers.pod_runner.config import PortRange, RunnerConfig
from workers.pod_runner.file_sd import FileSdWriter, Target
from workers.pod_runner.podspec import grace_seconds
from workers.pod_runner.processes import PortPool


def _config(tmp_path: Path, **env: str) -> RunnerConfig:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    base = {"KUBECONFIG": str(kubeconfig), "WORKDIR": str(tmp_path), "STATE_DIR": str(tmp_path / "state")}
    return RunnerConfig.from_settings(Settings({**base, **env}))


def test_defaults(tmp_path: Path) -> None:
    config = _config(tmp_path)
    assert config.port_range == PortRange(19100, 19999)
    assert config.label_selector == "harness.local/run-on-host=true"
    assert config.node_selector == "harness.local/simulated=true"
    assert config.namespaces == ("model-serving",)
    assert config.file_sd_path == tmp_path / "state" / "file_sd" / "workers.json"
    assert config.pod_log_dir == tmp_path / "state" / "pods"


@pytest.mark.parametrize(("env", "name"), [
    ({"PORT_RANGE": "19999-19100"}, "PORT_RANGE"),
    ({"PORT_RANGE": "80-90"}, "PORT_RANGE"),
    ({"PORT_RANGE": "19100"}, "PORT_RANGE"),
    ({"PORT_RANGE": "a-b"}, "PORT_RANGE"),
    ({"METRICS_PORT": "19150"}, "METRICS_PORT"),
    ({"KUBECONFIG": "/nonexistent/kubeconfig"}, "KUBECONFIG"),
    ({"KUBECONFIG": ""}, "KUBECONFIG"),
    ({"NAMESPACES": "Model_Serving"}, "NAMESPACES"),
    ({"WORKDIR": "/nonexistent/repo"}, "WORKDIR"),
    ({"RESYNC_SECONDS": "0"}, "RESYNC_SECONDS"),
    ({"RESTART_BACKOFF_SECONDS": "5", "RESTART_BACKOFF_MAX_SECONDS": "1"}, "RESTART_BACKOFF_MAX_SECONDS"),
])
def test_bad_values_are_named(tmp_path: Path, env: dict[str, str], name: str) -> None:
    with pytest.raises(ConfigError) as err:
        _config(tmp_path, **env)
    assert err.value.name == name


def test_the_command_exits_2_with_a_clear_message(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "KUBECONFIG": str(kubeconfig),
           "PORT_RANGE": "20000-19000", "STATE_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "workers.pod_runner"], cwd=REPO, capture_output=True,
                            text=True, timeout=60, env=env)
    assert result.returncode == 2
    assert "PORT_RANGE='20000-19000'" in result.stderr and "FIRST-LAST" in result.stderr


def test_port_pool_skips_ports_in_use_and_reuses_released_ones() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        taken = busy.getsockname()[1]
        busy.listen()
        pool = PortPool(PortRange(taken, taken + 2))
        first, second = pool.allocate(), pool.allocate()
        assert taken not in (first, second) and {first, second} == {taken + 1, taken + 2}
        with pytest.raises(RuntimeError, match="no free port"):
            pool.allocate()
        pool.release(first)
        assert pool.allocate() == first


def test_file_sd_is_replaced_whole_and_only_on_change(tmp_path: Path) -> None:
    path = tmp_path / "sd" / "workers.json"
    writer = FileSdWriter(path)
    targets = [Target(19101, "ns", "b", "gpu-1", "stt"), Target(19100, "ns", "a", "gpu-0", "tts")]
    assert writer.write(targets)
    assert json.loads(path.read_text()) == [
        {"targets": ["127.0.0.1:19100"],
         "labels": {"namespace": "ns", "pod": "a", "node": "gpu-0", "service": "tts"}},
        {"targets": ["127.0.0.1:19101"],
         "labels": {"namespace": "ns", "pod": "b", "node": "gpu-1", "service": "stt"}},
    ]
    inode = path.stat().st_ino
    assert not writer.write(list(reversed(targets)))
    assert writer.write([])
    assert json.loads(path.read_text()) == [] and path.stat().st_ino != inode
    assert [p.name for p in path.parent.iterdir()] == ["workers.json"]


@pytest.mark.parametrize(("deletion", "spec", "expected"), [
    (None, 12, 12),  # not terminating: the spec's
    (5, 12, 5),  # kubectl delete --grace-period=5
    (0, 12, 12),  # kwok's own immediate removal must not cut the worker's grace short
    (None, None, 30),  # Kubernetes' default
])
def test_grace_period(deletion: int | None, spec: int | None, expected: int) -> None:
    pod = V1Pod(metadata=V1ObjectMeta(name="p", deletion_grace_period_seconds=deletion),
                spec=V1PodSpec(containers=[], termination_grace_period_seconds=spec))
    assert grace_seconds(pod) == expected
