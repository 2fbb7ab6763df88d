"""loadtests/apiproxy.py: a loopback URL for a Service, through the API server's service proxy.

The API server here is a stub on 127.0.0.1 that records what reaches it (the relay's logic is under test: the path
it builds, the credentials it adds, what it passes through and back); tests/real_node's doctor test takes the same
service-proxy route through a real API server to real pods.
"""

from __future__ import annotations

import gzip
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from kubernetes import config

from loadtests.apiproxy import RelayError, ServiceRelay, cluster_service, proxy_base, with_address

TOKEN = "test-token-not-a-secret"  # noqa: S105 (the stub API server checks it is passed on)


class FakeAPIServer(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.server.seen.append({"method": self.command, "path": self.path, "headers": headers, "body": body})
        if self.path.startswith("/api/v1/namespaces/model-serving/services/gone:http/proxy"):
            status, payload = 503, {"kind": "Status", "code": 503,
                                    "message": 'no endpoints available for service "gone"'}
        else:
            status, payload = 201, {"echo": body.decode("latin-1"), "path": self.path}
        data = json.dumps(payload).encode()
        self.send_response(status)
        if "gzip" in self.headers.get("Accept-Encoding", ""):  # as Prometheus answers
            data = gzip.compress(data)
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Upstream", "yes")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def apiserver(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeAPIServer)
    server.seen = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{server.server_address[1]}"}}],
        "users": [{"name": "u", "user": {"token": TOKEN}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    }))
    yield server, config.new_client_from_config(str(kubeconfig))
    server.shutdown()


def test_requests_go_to_the_service_proxy_with_the_kubeconfigs_token(apiserver):
    server, api = apiserver
    relay = ServiceRelay.start(api, "service:model-serving/gateway:http")
    try:
        assert relay.url.startswith("http://127.0.0.1:")
        r = requests.post(f"{relay.url}/v1/jobs/stt?priority=1", data=b"RIFF\x00audio",
                          headers={"X-API-Key": "mgw_k", "Content-Type": "audio/wav"}, timeout=10)
        assert r.status_code == 201 and r.headers["X-Upstream"] == "yes", r.text
        assert r.json()["echo"] == "RIFF\x00audio"
        seen = server.seen[-1]
        assert seen["method"] == "POST"
        assert seen["path"] == "/api/v1/namespaces/model-serving/services/gateway:http/proxy/v1/jobs/stt?priority=1"
        assert seen["headers"]["authorization"] == f"Bearer {TOKEN}"
        assert seen["headers"]["x-api-key"] == "mgw_k" and seen["headers"]["content-type"] == "audio/wav"
        # A caller's own Authorization header never replaces the kubeconfig's.
        requests.get(f"{relay.url}/metrics", headers={"Authorization": "Bearer other"}, timeout=10)
        assert server.seen[-1]["headers"]["authorization"] == f"Bearer {TOKEN}"
    finally:
        relay.stop()


def test_the_api_servers_answer_comes_back_as_it_is(apiserver):
    _, api = apiserver
    relay = ServiceRelay.start(api, "service:model-serving/gone:http")
    try:
        r = requests.get(f"{relay.url}/v1/jobs/x", timeout=10)
        assert r.status_code == 503 and "no endpoints available" in r.json()["message"]
    finally:
        relay.stop()


def test_an_api_server_that_is_down_is_a_502_naming_it(tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],  # discard: nothing answers
        "users": [{"name": "u", "user": {"token": TOKEN}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    }))
    api = config.new_client_from_config(str(kubeconfig))
    relay = ServiceRelay.start(api, "service:monitoring/prometheus-operated:web")
    try:
        r = requests.get(f"{relay.url}/api/v1/query?query=up", timeout=10)
        assert r.status_code == 502 and "127.0.0.1:9" in r.text, r.text
    finally:
        relay.stop()


@pytest.mark.parametrize("ref", ["http://127.0.0.1:18080", "service:model-serving/gateway", "service:NS/gw:http",
                                 "service:model-serving/gateway:http/v1"])
def test_a_reference_that_is_not_a_service_is_refused_naming_it(ref):
    with pytest.raises(RelayError, match="service:<namespace>/<name>:<port>") as err:
        proxy_base(ref)
    assert repr(ref) in str(err.value)


def test_a_compressed_answer_comes_back_compressed_once(apiserver):
    """The body is passed back with its own Content-Encoding, not decoded under a gzip header."""
    _, api = apiserver
    relay = ServiceRelay.start(api, "service:monitoring/prometheus-operated:web")
    try:
        r = requests.get(f"{relay.url}/api/v1/query?query=up", headers={"Accept-Encoding": "gzip"}, timeout=10)
        assert r.status_code == 201 and r.headers["Content-Encoding"] == "gzip"
        assert r.json()["path"].endswith("/proxy/api/v1/query?query=up")
    finally:
        relay.stop()


@pytest.mark.parametrize(("url", "expected"), [
    ("redis://:pw@redis.model-serving.svc.cluster.local:6379/0", ("model-serving", "redis", 6379)),
    ("redis://redis.cluster-path.svc:6380", ("cluster-path", "redis", 6380)),
    ("redis://redis.model-serving.svc/0", ("model-serving", "redis", 6379)),  # Redis' default port
    ("redis://127.0.0.1:16379/0", None),  # an address the caller reaches itself
    ("redis://redis:6379/0", None),  # a bare name: not a cluster Service reference
    ("redis://redis.model-serving:6379/0", None),  # no .svc: could be any DNS name
    ("redis://Redis_X.ns.svc:6379", None),  # not a DNS label
])
def test_a_redis_url_names_a_cluster_service_only_by_its_service_dns_name(url, expected):
    assert cluster_service(url) == expected


def test_the_relayed_url_keeps_credentials_database_and_query():
    url = "redis://:s3cr3t@redis.model-serving.svc.cluster.local:6379/2?socket_timeout=5"
    assert with_address(url, "127.0.0.1", 40123) == "redis://:s3cr3t@127.0.0.1:40123/2?socket_timeout=5"
    assert with_address("redis://redis.ns.svc:6379", "127.0.0.1", 1) == "redis://127.0.0.1:1"
