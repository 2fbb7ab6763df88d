"""Enabling the xtts service is data, as mt is (tests/targets/test_mt_service.py): its service table entry renders a
Deployment on the optional tts-coqui-worker image with the model volume at /models/xtts, and an HPA with the tts policy
and 3 jobs per pod (shared DESIGN's table: "xtts: 3"). Expectations come from that table, not from the rendering."""

from __future__ import annotations

import json

import yaml
from conftest import REPO, ansible_playbook

SERVICES = yaml.safe_load((REPO / "roles/harness/defaults/main.yml").read_text())["harness_services"]
PVC = {"persistentVolumeClaim": {"claimName": "xtts-model", "readOnly": True}}


def obj(rendering: dict, kind: str, name: str) -> dict:
    found = [o for o in rendering["objects"] if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


def test_the_xtts_entry_ships_disabled_on_the_coqui_image():
    [entry] = [s for s in SERVICES if s["name"] == "xtts"]
    assert entry["enabled"] is False and entry["queue"] == entry["queue_type"] == "xtts"
    assert entry["image"] == "{{ harness_images['tts-coqui-worker'] }}"
    assert entry["env"] == {"XTTS_MODEL_DIR": "/models/xtts"} and entry["model_mount"] == "/models/xtts"
    tts = next(s for s in SERVICES if s["name"] == "tts")
    assert entry["resources"] == tts["resources"] and entry["gpu"] == tts["gpu"]
    assert entry["hpa"] == {**tts["hpa"], "queue_depth_per_pod": 3}


def test_enabling_xtts_deploys_it_with_its_model_volume_and_policy(tmp_path):
    services = [{**s, "enabled": True} if s["name"] == "xtts" else s for s in SERVICES]
    r = ansible_playbook("-i", "inventories/gke", "tests/targets/render.yml", "-e", f"render_out={tmp_path}",
                         "-e", json.dumps({"harness_services": services, "harness_model_volumes": {"xtts": PVC}}))
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    rendering = json.loads((tmp_path / "controller.json").read_text())
    spec = obj(rendering, "Deployment", "xtts")["spec"]
    pod = spec["template"]["spec"]
    worker = pod["containers"][0]
    assert worker["command"] == ["python", "-m", "workers.worker", "--service", "xtts"]
    assert worker["image"].rsplit("/", 1)[-1].startswith("tts-coqui-worker")
    assert {"name": "model", "mountPath": "/models/xtts", "readOnly": True} in worker["volumeMounts"]
    assert {"name": "model", **PVC} in pod["volumes"]
    env = {e["name"]: e.get("value") for e in worker["env"]}
    assert env["XTTS_MODEL_DIR"] == "/models/xtts" and env["QUEUE_NAME"] == "xtts"
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert spec["replicas"] == 2
    hpa = obj(rendering, "HorizontalPodAutoscaler", "xtts")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 8)
    external = [m["external"] for m in hpa["metrics"] if m["type"] == "External"]
    assert external and external[0]["target"]["averageValue"] in ("3", 3)
    assert external[0]["metric"]["selector"]["matchLabels"]["queue_name"] == "xtts"
    gateway = obj(rendering, "Deployment", "gateway")["spec"]["template"]["spec"]["containers"][0]
    queues = next(e["value"] for e in gateway["env"] if e["name"] == "QUEUES").split(",")
    assert "xtts" in queues or "xtts:xtts" in queues
    gateway_env = {e["name"]: e.get("value") for e in gateway["env"]}
    # No default voice in the table's entry: the gateway must refuse a job without a reference; the model's
    # languages are not in the entry either, so the gateway keeps XTTS v2's (workers/gateway/config.py).
    assert gateway_env["XTTS_DEFAULT_VOICE"] == "false" and "XTTS_LANGUAGES" not in gateway_env
    assert env["XTTS_DEVICE"] == "cuda"  # GPU nodes on every cloud target (the role's default worker environment)
    for kind in ("Service", "PodDisruptionBudget", "NetworkPolicy"):
        obj(rendering, kind, "xtts-metrics" if kind == "Service" else "xtts")


def test_a_default_voice_and_the_models_languages_reach_the_gateway(tmp_path):
    """The entry's XTTS_SPEAKER_WAV (a default voice) and XTTS_LANGUAGES (the model's languages) tell the gateway
    what it may accept: a job without a reference voice, and only those languages."""
    env = {"XTTS_MODEL_DIR": "/models/xtts", "XTTS_SPEAKER_WAV": "/models/xtts/speaker.wav", "XTTS_LANGUAGES": "en,de"}
    services = [{**s, "enabled": True, "env": env} if s["name"] == "xtts" else s for s in SERVICES]
    r = ansible_playbook("-i", "inventories/gke", "tests/targets/render.yml", "-e", f"render_out={tmp_path}",
                         "-e", json.dumps({"harness_services": services, "harness_model_volumes": {"xtts": PVC}}))
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    rendering = json.loads((tmp_path / "controller.json").read_text())
    gateway = obj(rendering, "Deployment", "gateway")["spec"]["template"]["spec"]["containers"][0]
    gateway_env = {e["name"]: e.get("value") for e in gateway["env"]}
    assert (gateway_env["XTTS_DEFAULT_VOICE"], gateway_env["XTTS_LANGUAGES"]) == ("true", "en,de")
