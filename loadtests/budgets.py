"""Changing a service's monthly budget during a run, and always putting the original back.

The cost exporter re-reads its config when the file changes (mtime). Locally that file is
``{{ harness_state_dir }}/cost-exporter.yml``; on a cluster it is the ``config.yml`` key of the
``cost-exporter`` ConfigMap (the kubelet refreshes the mounted file within about a minute, so budget
scenarios need longer bounds there).

Before the first change the original is saved next to it (``<file>.loadtest-backup``, or an annotation on
the ConfigMap); the end of every run, and the start of the next one after a crash, restores it byte for
byte, so a re-run of the cost_tracking role sees no change.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

import yaml

BACKUP_ANNOTATION = "harness.local/loadtest-backup"


class BudgetStore(Protocol):
    def read(self) -> str: ...
    def write(self, text: str) -> None: ...
    def save_backup(self, text: str) -> None: ...
    def pop_backup(self) -> str | None: ...
    def describe(self) -> str: ...


class FileStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.backup = path.with_name(path.name + ".loadtest-backup")

    def read(self) -> str:
        return self.path.read_text()

    def write(self, text: str) -> None:
        tmp = self.path.with_name(f".{self.path.name}.loadtest-tmp")
        tmp.write_text(text)
        os.chmod(tmp, self.path.stat().st_mode & 0o777)
        tmp.replace(self.path)  # atomic: the exporter never reads half a file

    def save_backup(self, text: str) -> None:
        self.backup.write_text(text)

    def pop_backup(self) -> str | None:
        if not self.backup.is_file():
            return None
        text = self.backup.read_text()
        self.backup.unlink()
        return text

    def describe(self) -> str:
        return str(self.path)


class ConfigMapStore:
    def __init__(self, kube: Any, namespace: str, name: str, key: str) -> None:
        self.kube, self.namespace, self.name, self.key = kube, namespace, name, key

    def read(self) -> str:
        return self.kube.read_config_map(self.namespace, self.name)[self.key]

    def write(self, text: str) -> None:
        self.kube.patch_config_map(self.namespace, self.name, {self.key: text})

    def save_backup(self, text: str) -> None:
        self.kube.core.patch_namespaced_config_map(
            self.name,
            self.namespace,
            {"metadata": {"annotations": {BACKUP_ANNOTATION: text}}},
            _request_timeout=5,
        )

    def pop_backup(self) -> str | None:
        cm = self.kube.core.read_namespaced_config_map(self.name, self.namespace, _request_timeout=5)
        text = (cm.metadata.annotations or {}).get(BACKUP_ANNOTATION)
        if text is not None:
            self.kube.core.patch_namespaced_config_map(
                self.name,
                self.namespace,
                {"metadata": {"annotations": {BACKUP_ANNOTATION: None}}},
                _request_timeout=5,
            )
        return text

    def describe(self) -> str:
        return f"ConfigMap {self.namespace}/{self.name} key {self.key}"


def store_from_spec(spec: str, kube: Any | None) -> BudgetStore:
    """``configmap:<namespace>/<name>/<key>`` or a file path."""
    if spec.startswith("configmap:"):
        parts = spec.removeprefix("configmap:").split("/")
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"--cost-config {spec!r}: expected configmap:<namespace>/<name>/<key>")
        if kube is None:
            raise ValueError("--cost-config names a ConfigMap but no kubeconfig was given")
        return ConfigMapStore(kube, *parts)
    return FileStore(Path(spec).expanduser())


class BudgetEditor:
    def __init__(self, store: BudgetStore) -> None:
        self.store = store
        self.original: str | None = None
        self.log: list[dict[str, Any]] = []

    def recover(self) -> str | None:
        """Restore a backup left by a run that died mid-change; returns a message when it did."""
        text = self.store.pop_backup()
        if text is None:
            return None
        self.store.write(text)
        return f"restored {self.store.describe()} from the backup a previous, interrupted run left"

    def budgets(self) -> dict[str, float]:
        data = yaml.safe_load(self.store.read()) or {}
        return {s["name"]: float(s["monthly_budget_usd"]) for s in data.get("services") or []}

    def set_budgets(self, budgets: dict[str, float]) -> dict[str, float]:
        """Set the given services' budgets; returns the budgets they had before."""
        current = self.store.read()
        if self.original is None:
            self.original = current
            self.store.save_backup(current)
        data = yaml.safe_load(current) or {}
        before = {}
        known = {s.get("name") for s in data.get("services") or []}
        missing = sorted(set(budgets) - known)
        if missing:
            raise KeyError(f"{self.store.describe()} has no service(s) {missing}; it has {sorted(known)}")
        for svc in data["services"]:
            if svc["name"] in budgets:
                before[svc["name"]] = float(svc["monthly_budget_usd"])
                svc["monthly_budget_usd"] = float(budgets[svc["name"]])
        header = "# Changed by loadtests (a budget scenario); the original is restored when the run ends.\n"
        self.store.write(header + yaml.safe_dump(data, sort_keys=False))
        return before

    def restore_services(self, services: tuple[str, ...]) -> dict[str, float]:
        """Put the original budgets of these services back (the rest keep their changed values)."""
        if self.original is None:
            return {}
        original = {
            s["name"]: float(s["monthly_budget_usd"])
            for s in (yaml.safe_load(self.original) or {}).get("services") or []
        }
        wanted = {svc: original[svc] for svc in services if svc in original}
        if {**self.budgets(), **wanted} == original:
            self.restore_all()  # every service is back at its original budget: write the original bytes
        else:
            self.set_budgets(wanted)
        return wanted

    def restore_all(self) -> bool:
        """Write the original bytes back and drop the backup; True if anything had been changed."""
        if self.original is None:
            return False
        if self.store.read() != self.original:
            self.store.write(self.original)
        self.store.pop_backup()
        self.original = None
        return True
