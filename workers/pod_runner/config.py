"""Pod runner settings from the environment, validated before anything starts."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from workers.core.env import ConfigError, Settings

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
DEFAULT_LABEL_SELECTOR = "harness.local/run-on-host=true"
DEFAULT_NODE_SELECTOR = "harness.local/simulated=true"
DEFAULT_PORT_RANGE = "19100-19999"
DEFAULT_METRICS_PORT = 9410
# What a worker inherits from the runner's own environment. A container would inherit nothing; a host
# process needs a PATH, a HOME and the offline/cache settings of the venv. PASS_ENV adds names.
BASE_PASS_ENV = ("PATH", "HOME", "USER", "LANG", "LC_ALL", "TZ", "TMPDIR", "VIRTUAL_ENV", "XDG_CACHE_HOME",
                 "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


@dataclass(frozen=True)
class PortRange:
    first: int
    last: int

    @classmethod
    def parse(cls, name: str, raw: str) -> PortRange:
        allowed = "FIRST-LAST with 1024 <= FIRST <= LAST <= 65535, e.g. 19100-19999"
        first, sep, last = raw.partition("-")
        if not sep:
            raise ConfigError(name, raw, allowed)
        try:
            lo, hi = int(first.strip()), int(last.strip())
        except ValueError:
            raise ConfigError(name, raw, allowed) from None
        if not 1024 <= lo <= hi <= 65535:
            raise ConfigError(name, raw, allowed)
        return cls(lo, hi)

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.first <= port <= self.last


@dataclass(frozen=True)
class RunnerConfig:
    kubeconfig: Path
    namespaces: tuple[str, ...]
    label_selector: str
    node_selector: str
    workdir: Path
    state_dir: Path
    file_sd_path: Path
    port_range: PortRange
    metrics_host: str
    metrics_port: int
    resync_s: float
    backoff_s: float
    backoff_max_s: float
    pass_env: tuple[str, ...]
    log_level: str

    @property
    def pod_log_dir(self) -> Path:
        return self.state_dir / "pods"

    @property
    def process_file(self) -> Path:
        """Pids this runner started, so a later run can find workers whose pods vanished meanwhile."""
        return self.state_dir / "processes.json"

    @classmethod
    def from_settings(cls, s: Settings) -> RunnerConfig:
        kubeconfig = Path(s.text("KUBECONFIG", "")).expanduser()
        if not str(kubeconfig) or str(kubeconfig) == "." or not kubeconfig.is_file():
            raise ConfigError("KUBECONFIG", s.optional("KUBECONFIG"),
                              "the path of an existing kubeconfig file (the local target writes "
                              "~/.local/state/gpu-serving-harness/local/kubeconfig)")
        namespaces = tuple(s.name_list("NAMESPACES", "model-serving"))
        for ns in namespaces:
            if not _DNS_LABEL.fullmatch(ns):
                raise ConfigError("NAMESPACES", ",".join(namespaces), "comma-separated namespace names")
        workdir = Path(s.text("WORKDIR", os.getcwd())).expanduser().resolve()
        if not workdir.is_dir():
            raise ConfigError("WORKDIR", str(workdir), "an existing directory (the repository root)")
        default_state = Path(s.text("HARNESS_STATE_DIR", "~/.local/state/gpu-serving-harness/local"))
        state_dir = Path(s.text("STATE_DIR", str(default_state / "pod-runner"))).expanduser().resolve()
        file_sd = Path(s.text("FILE_SD_PATH", str(state_dir / "file_sd" / "workers.json"))).expanduser()
        port_range = PortRange.parse("PORT_RANGE", s.text("PORT_RANGE", DEFAULT_PORT_RANGE))
        metrics_port = s.port("METRICS_PORT", DEFAULT_METRICS_PORT)
        if metrics_port in port_range:
            raise ConfigError("METRICS_PORT", metrics_port, "a port outside PORT_RANGE (workers get those)")
        backoff_s = s.number("RESTART_BACKOFF_SECONDS", 1.0, 0.1, 300.0)
        backoff_max_s = s.number("RESTART_BACKOFF_MAX_SECONDS", 30.0, 0.1, 3600.0)
        if backoff_max_s < backoff_s:
            raise ConfigError("RESTART_BACKOFF_MAX_SECONDS", backoff_max_s,
                              f"a number >= RESTART_BACKOFF_SECONDS ({backoff_s})")
        extra = tuple(n.strip() for n in s.text("PASS_ENV", "").split(",") if n.strip())
        return cls(
            kubeconfig=kubeconfig.resolve(),
            namespaces=namespaces,
            label_selector=s.text("LABEL_SELECTOR", DEFAULT_LABEL_SELECTOR),
            node_selector=s.text("NODE_SELECTOR", DEFAULT_NODE_SELECTOR),
            workdir=workdir,
            state_dir=state_dir,
            file_sd_path=file_sd.resolve(),
            port_range=port_range,
            metrics_host=s.text("METRICS_HOST", "127.0.0.1"),
            metrics_port=metrics_port,
            resync_s=s.number("RESYNC_SECONDS", 5.0, 1.0, 600.0),
            backoff_s=backoff_s,
            backoff_max_s=backoff_max_s,
            pass_env=BASE_PASS_ENV + extra,
            log_level=s.choice("LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR")),
        )
