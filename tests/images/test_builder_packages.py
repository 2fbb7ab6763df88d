"""The builder's packages cover what its own configuration names: podman refuses to start ("could not find
netavark") when the network backend containers.conf names is not installed, and Debian installs netavark only as
a recommendation of podman, which the role and the bootstrap leave out. Found on a fresh machine, where the
images stage failed at its first `podman import`."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def _backend() -> str:
    conf = (REPO / "roles/images/templates/containers.conf.j2").read_text()
    m = re.search(r'^network_backend\s*=\s*"([a-z]+)"', conf, re.M)
    assert m, "containers.conf.j2 names no network_backend"
    return m.group(1)


def test_the_role_installs_the_network_backend_it_configures() -> None:
    packages = yaml.safe_load((REPO / "roles/images/defaults/main.yml").read_text())["images_packages"]
    assert _backend() in packages, f"network_backend {_backend()!r} is not among images_packages {packages}"


def test_the_bootstrap_installs_it_too() -> None:
    text = (REPO / "scripts/bootstrap.sh").read_text()
    m = re.search(r"^apt_packages=\(([^)]*)\)", text, re.M)
    assert m, "scripts/bootstrap.sh has no apt_packages list"
    assert _backend() in m.group(1).split(), f"bootstrap's apt_packages lack {_backend()!r}: {m.group(1)}"
