"""The doctor names the hop that failed, and why, when what it talks to is broken: the API server is down, a URL is
not HTTP, a server speaks something other than HTTP, or an answer is not JSON. It never raises.

Every peer here is a stub on 127.0.0.1 started by the test (no stack needed): exporters, Prometheus and Alertmanager
answer as healthy ones do, so the hop under test is the first that fails.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from workers_testlib import free_port

from workers.doctor.__main__ import main

HOPS = ["exporters", "prometheus", "apiservice", "adapter", "hpa", "alertmanager"]
METRICS = {
    "queue-exporter": "redis_queue_depth",
    "gpu-exporter": "DCGM_FI_DEV_GPU_UTIL",
    "cost-exporter": "service_cost_per_hour",
}
PROMETHEUS_OK = {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [0, "1"]}]}}
ALERTMANAGER_OK = {"cluster": {"status": "ready"}}
HTML = b"<html><body>Sign in</body></html>"


class Stub(BaseHTTPRequestHandler):
    """Answers by path prefix from the server's `routes`: (content type, body)."""

    def do_GET(self):
        for prefix, (ctype, body, *status) in self.server.routes.items():
            if self.path.startswith(prefix):
                self.send_response(status[0] if status else 200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
        self.send_error(404)

    def log_message(self, *args):
        pass


def _serve(routes: dict[str, tuple[str, bytes]]) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    server.routes = routes
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def healthy() -> Iterator[dict[str, str]]:
    """Exporters, Prometheus and Alertmanager that pass their hops."""
    routes = {f"/{name}": ("text/plain", f"# TYPE {m} gauge\n{m} 1\n".encode()) for name, m in METRICS.items()}
    routes["/prom/api/v1/query"] = ("application/json", json.dumps(PROMETHEUS_OK).encode())
    routes["/am/api/v2/status"] = ("application/json", json.dumps(ALERTMANAGER_OK).encode())
    server, base = _serve(routes)
    yield {"base": base, "prometheus": f"{base}/prom", "alertmanager": f"{base}/am",
           **{name: f"{base}/{name}" for name in METRICS}}
    server.shutdown()


@pytest.fixture
def not_http() -> Iterator[str]:
    """A TCP port that answers every connection with a line that is not HTTP (a Redis port, say)."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def loop():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(4096)
                conn.sendall(b"-ERR unknown command 'GET'\r\n")

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join(timeout=5)
    listener.close()


def _kubeconfig(tmp_path: Path, server: str) -> str:
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "not-a-real-token"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    }))
    return str(path)


def _doctor(capsys, kubeconfig: str, urls: dict[str, str], **override: str) -> tuple[int, dict, str]:
    urls = {**urls, **override}
    argv = ["--kubeconfig", kubeconfig, "--namespace", "harness", "--service", "stt:stt",
            "--prometheus-url", urls["prometheus"], "--alertmanager-url", urls["alertmanager"]]
    argv += [f"--exporter={name}={urls[name]}" for name in METRICS]
    rc = main(argv)  # raising here is the bug under test
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert [h["hop"] for h in result["hops"]] == HOPS, result
    return rc, result, err


def test_api_server_down_names_the_apiservice_hop(tmp_path, capsys, healthy):
    port = free_port()  # nothing listens there
    rc, result, err = _doctor(capsys, _kubeconfig(tmp_path, f"https://127.0.0.1:{port}"), healthy)
    assert rc == 1
    assert result["failed_hop"] == "apiservice", result
    assert f"127.0.0.1:{port}" in result["reason"] and "does not answer" in result["reason"], result["reason"]
    hops = {h["hop"]: h for h in result["hops"]}
    assert hops["exporters"]["ok"] and hops["prometheus"]["ok"], hops
    for later in ("adapter", "hpa"):  # the later hops that need the API server report it too, without raising
        assert not hops[later]["ok"] and f"127.0.0.1:{port}" in hops[later]["detail"], hops[later]
    assert "doctor: FAILED at hop 'apiservice'" in err


def test_an_api_server_answering_html_names_the_apiservice_hop(tmp_path, capsys, healthy):
    # A proxy or a login page in front of the API server: HTTP 200, but not the API's JSON.
    server, base = _serve({"/": ("text/html", HTML)})
    try:
        rc, result, _ = _doctor(capsys, _kubeconfig(tmp_path, base), healthy)
    finally:
        server.shutdown()
    assert rc == 1 and result["failed_hop"] == "apiservice", result
    assert "not JSON" in result["reason"] or "not an APIService" in result["reason"], result["reason"]


@pytest.mark.parametrize("option, url, hop", [
    ("prometheus", "ftp://127.0.0.1/prometheus", "prometheus"),
    ("alertmanager", "127.0.0.1:9093", "alertmanager"),
    ("queue-exporter", "file:///etc/passwd", "exporters"),
    ("prometheus", "service:monitoring/prometheus-operated", "prometheus"),  # a service reference without its port
])
def test_a_url_that_is_not_http_names_its_hop(tmp_path, capsys, healthy, option, url, hop):
    kubeconfig = _kubeconfig(tmp_path, f"https://127.0.0.1:{free_port()}")
    rc, result, _ = _doctor(capsys, kubeconfig, healthy, **{option: url})
    assert rc == 1
    failed = next(h for h in result["hops"] if h["hop"] == hop)
    assert not failed["ok"] and url in failed["detail"] and "not an http(s) URL" in failed["detail"], failed
    assert "service:<namespace>/<name>:<port>" in failed["detail"], failed  # and says what else is allowed
    if hop != "alertmanager":  # alertmanager is the last hop; the API server (down here) fails before it
        assert result["failed_hop"] == hop, result


def test_a_peer_that_does_not_speak_http_names_its_hop(tmp_path, capsys, healthy, not_http):
    kubeconfig = _kubeconfig(tmp_path, f"https://127.0.0.1:{free_port()}")
    rc, result, _ = _doctor(capsys, kubeconfig, healthy, **{"gpu-exporter": f"{not_http}/metrics"})
    assert rc == 1 and result["failed_hop"] == "exporters", result
    assert "gpu-exporter" in result["reason"] and not_http in result["reason"], result["reason"]
    rc, result, _ = _doctor(capsys, kubeconfig, healthy, prometheus=not_http)
    assert rc == 1 and result["failed_hop"] == "prometheus", result
    assert not_http in result["reason"], result["reason"]


@pytest.mark.parametrize("option, hop", [("prometheus", "prometheus"), ("alertmanager", "alertmanager")])
def test_an_answer_that_is_not_json_names_its_hop(tmp_path, capsys, healthy, option, hop):
    server, base = _serve({"/": ("text/html", HTML)})
    try:
        kubeconfig = _kubeconfig(tmp_path, f"https://127.0.0.1:{free_port()}")
        rc, result, _ = _doctor(capsys, kubeconfig, healthy, **{option: base})
    finally:
        server.shutdown()
    assert rc == 1
    failed = next(h for h in result["hops"] if h["hop"] == hop)
    assert not failed["ok"] and "not JSON" in failed["detail"] and base in failed["detail"], failed
    if hop == "prometheus":
        assert result["failed_hop"] == "prometheus", result


def test_json_that_is_not_the_prometheus_api_names_the_prometheus_hop(tmp_path, capsys, healthy):
    server, base = _serve({"/": ("application/json", b'["not", "a", "query", "result"]')})
    try:
        kubeconfig = _kubeconfig(tmp_path, f"https://127.0.0.1:{free_port()}")
        rc, result, _ = _doctor(capsys, kubeconfig, healthy, prometheus=base)
    finally:
        server.shutdown()
    assert rc == 1 and result["failed_hop"] == "prometheus", result
    assert "not a Prometheus query answer" in result["reason"], result["reason"]


def test_a_missing_kubeconfig_is_named(tmp_path, healthy):
    missing = tmp_path / "nowhere" / "kubeconfig"
    with pytest.raises(SystemExit) as exc:
        main(["--kubeconfig", str(missing), "--namespace", "harness", "--service", "stt:stt",
              "--prometheus-url", healthy["prometheus"], "--alertmanager-url", healthy["alertmanager"]])
    assert str(missing) in str(exc.value) and "kubeconfig" in str(exc.value), exc.value


def test_service_references_go_through_the_api_server_and_a_service_without_endpoints_is_named(tmp_path, capsys):
    """service:<namespace>/<name>:<port>/path is fetched from the API server's service proxy with the kubeconfig's
    credentials (here a stub API server); Prometheus scaled to 0 (the API server's 503, no endpoints) fails the
    prometheus hop, naming the reference and the likely cause, while the proxied exporters and Alertmanager pass."""
    proxy = "/api/v1/namespaces/{}/services/{}/proxy"
    routes = {proxy.format("harness", f"{name}:http") + "/metrics": ("text/plain", f"{m} 1\n".encode())
              for name, m in METRICS.items()}
    routes[proxy.format("monitoring", "alertmanager-operated:web") + "/api/v2/status"] = (
        "application/json", json.dumps(ALERTMANAGER_OK).encode())
    routes[proxy.format("monitoring", "prometheus-operated:web") + "/api/v1/query"] = (
        "application/json", json.dumps({"kind": "Status", "status": "Failure", "code": 503, "reason":
                                        "ServiceUnavailable", "message": 'no endpoints available for service '
                                        '"prometheus-operated"'}).encode(), 503)
    server, base = _serve(routes)
    try:
        urls = {"prometheus": "service:monitoring/prometheus-operated:web",
                "alertmanager": "service:monitoring/alertmanager-operated:web",
                **{name: f"service:harness/{name}:http/metrics" for name in METRICS}}
        rc, result, err = _doctor(capsys, _kubeconfig(tmp_path, base), urls)
    finally:
        server.shutdown()
    hops = {h["hop"]: h for h in result["hops"]}
    assert rc == 1 and result["failed_hop"] == "prometheus", result
    assert hops["exporters"]["ok"] and hops["alertmanager"]["ok"], hops
    reason = result["reason"]
    assert "service:monitoring/prometheus-operated:web" in reason and "503" in reason, reason
    assert "no endpoints available" in reason and "scaled to 0" in reason, reason
    assert "doctor: FAILED at hop 'prometheus'" in err
