"""Reach a Service of the cluster through the API server, with the kubeconfig only, from programs that want a URL.

Locust, the checker's samplers and the job poller speak plain HTTP to a base URL. On a cluster the gateway,
Prometheus and Alertmanager are Services with no address on the machine running the load test; a port-forward
reaches one pod and dies with it. ``ServiceRelay`` listens on 127.0.0.1 (an ephemeral port) and forwards every
request to ``/api/v1/namespaces/<ns>/services/<name>:<port>/proxy/<path>`` with the kubeconfig's credentials, the
same route ``kubectl get --raw`` and the doctor take (workers/doctor: ``service:<ns>/<name>:<port>``
references), so the API server picks a ready endpoint for each request. Nothing listens beyond loopback.

    relay = ServiceRelay.start(api_client, "service:model-serving/gateway:http")
    relay.url  # http://127.0.0.1:<port>, for as long as the relay runs
    relay.stop()
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import urllib3
from kubernetes import client

from workers.doctor.hops import SERVICE_REF

# Headers that belong to one connection, not to the request (RFC 9110 section 7.6.1), and the ones the relay sets.
# Authorization is the API server's (the kubeconfig's credentials), and the API server does not pass it to the
# Service: the load test sends the gateway's key as X-API-Key, which the gateway accepts on every path.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
              "host", "content-length", "authorization"}
# Far above an audio upload the gateway accepts; a larger body is refused before it is read.
MAX_BODY_BYTES = 256 * 1024 * 1024


class RelayError(ValueError):
    """A reference the relay cannot serve; the message names it and the allowed form."""


def proxy_base(ref: str) -> str:
    """The API server path of a ``service:<namespace>/<name>:<port>`` reference (no trailing path allowed)."""
    m = SERVICE_REF.match(ref)
    if not m or m["path"] not in (None, "", "/"):
        raise RelayError(f"{ref!r} is not a service reference: allowed is service:<namespace>/<name>:<port> "
                         "(lower-case names; the port's name or number)")
    return f"/api/v1/namespaces/{m['ns']}/services/{m['name']}:{m['port']}/proxy"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _RelayServer

    def _forward(self) -> None:
        relay = self.server.relay
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self.send_error(413, f"request body of {length} bytes is over the relay's {MAX_BODY_BYTES}")
            return
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        try:
            status, reason, out_headers, data = relay.request(self.command, self.path, headers, body)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            self.send_error(502, f"the API server at {relay.host} does not answer: {type(exc).__name__}: {exc}")
            return
        self.send_response(status, reason)
        for k, v in out_headers:
            if k.lower() not in HOP_BY_HOP:
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _forward

    def log_message(self, *args):  # the load test's own output stays readable
        pass


class _RelayServer(ThreadingHTTPServer):
    daemon_threads = True
    relay: ServiceRelay


class ServiceRelay:
    """A loopback HTTP server forwarding to one Service through the API server's service proxy."""

    def __init__(self, api: client.ApiClient, ref: str, timeout: float = 60.0):
        self.api = api
        self.ref = ref
        self.base = proxy_base(ref)
        self.host = api.configuration.host.rstrip("/")
        self.timeout = timeout
        self._server: _RelayServer | None = None

    @classmethod
    def start(cls, api: client.ApiClient, ref: str, timeout: float = 60.0) -> ServiceRelay:
        relay = cls(api, ref, timeout)
        server = _RelayServer(("127.0.0.1", 0), _Handler)
        server.relay = relay
        relay._server = server
        threading.Thread(target=server.serve_forever, name=f"relay {ref}", daemon=True).start()
        return relay

    @property
    def url(self) -> str:
        assert self._server is not None, "the relay is not running"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def request(self, method: str, path: str, headers: dict[str, str], body: bytes | None):
        """One request through the API server: (status, reason, headers, body)."""
        auth: dict[str, str] = {}
        # The kubeconfig's token (refreshed by its exec plugin, if any); client certificates are the pool's own.
        self.api.update_params_for_auth(auth, [], ["BearerToken"])
        resp = self.api.rest_client.pool_manager.request(
            method, self.host + self.base + path, body=body, headers={**headers, **auth},
            timeout=urllib3.Timeout(total=self.timeout), retries=False, redirect=False, preload_content=True,
            # The body goes back as it came, with its Content-Encoding (found with Prometheus's gzip answers:
            # a decoded body under a gzip header is undecodable for the caller).
            decode_content=False)
        return resp.status, resp.reason or "", list(resp.headers.items()), resp.data

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
