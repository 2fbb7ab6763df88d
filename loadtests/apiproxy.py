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

Redis speaks RESP, which the service proxy does not carry: ``PodPortRelay`` forwards TCP connections to a Ready
pod behind a Service through ``pods/portforward``, one stream per connection, for the checker's Redis reads.
"""

from __future__ import annotations

import contextlib
import re
import select
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit, urlunsplit

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


# A cluster-internal Redis URL names a Service (``redis.<namespace>.svc``, as roles/queue writes it); a machine
# outside the cluster cannot resolve or route it.
_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
CLUSTER_HOST = re.compile(rf"^(?P<name>{_DNS_LABEL})\.(?P<ns>{_DNS_LABEL})\.svc(\.[a-z0-9.-]+)?$")


def cluster_service(url: str) -> tuple[str, str, int] | None:
    """(namespace, service, port) when ``url`` names a Service by its cluster DNS name, else None."""
    parts = urlsplit(url)
    m = CLUSTER_HOST.match(parts.hostname or "")
    if not m:
        return None
    return m["ns"], m["name"], parts.port or 6379


def with_address(url: str, host: str, port: int) -> str:
    """``url`` with its host and port replaced (credentials, path and query kept)."""
    parts = urlsplit(url)
    auth = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=(auth + "@" if auth else "") + f"{host}:{port}"))


class PodPortRelay:
    """A loopback TCP listener forwarding each connection to a port of a Ready pod, through the API server.

    For protocols the service proxy does not carry (Redis' RESP): every connection opens its own
    ``pods/portforward`` stream (what ``kubectl port-forward`` uses) to a pod that is Ready at that moment, picked
    by the Service's selector, so a restarted Redis pod is reached again by the next connection, and only the
    kubeconfig's credentials are needed. Nothing listens beyond loopback.
    """

    def __init__(self, core: client.CoreV1Api, namespace: str, selector: str, port: int):
        self.core, self.namespace, self.selector, self.port = core, namespace, selector, int(port)
        self._listener: socket.socket | None = None
        self.errors: list[str] = []

    @classmethod
    def for_service(cls, core: client.CoreV1Api, namespace: str, service: str, port: int) -> PodPortRelay:
        """A relay to the pods behind ``service`` (its selector; ``port`` is the Service's, mapped to the pod's)."""
        svc = core.read_namespaced_service(service, namespace, _request_timeout=10)
        selector = svc.spec.selector or {}
        if not selector:
            raise RelayError(f"Service {namespace}/{service} has no selector: no pod to forward to")
        target = port
        for p in svc.spec.ports or []:
            if p.port == port and isinstance(p.target_port, int):
                target = p.target_port
        return cls(core, namespace, ",".join(f"{k}={v}" for k, v in sorted(selector.items())), target).start()

    def start(self) -> PodPortRelay:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        s.listen(32)
        self._listener = s
        threading.Thread(target=self._accept, name=f"relay {self.namespace}/{self.selector}", daemon=True).start()
        return self

    @property
    def address(self) -> tuple[str, int]:
        assert self._listener is not None, "the relay is not running"
        return "127.0.0.1", self._listener.getsockname()[1]

    def ready_pod(self) -> str:
        """The name of a Ready, not terminating pod behind the selector; RelayError names the selector if none."""
        pods = self.core.list_namespaced_pod(self.namespace, label_selector=self.selector, _request_timeout=10)
        for pod in pods.items:
            ready = any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))
            if ready and pod.metadata.deletion_timestamp is None:
                return pod.metadata.name
        raise RelayError(f"no Ready pod matches {self.selector} in {self.namespace}")

    def _accept(self) -> None:
        listener = self._listener
        while listener is not None:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        from kubernetes.stream import portforward

        try:
            pod = self.ready_pod()
            pf = portforward(self.core.connect_get_namespaced_pod_portforward, pod, self.namespace,
                             ports=str(self.port), _request_timeout=30)
            remote = pf.socket(self.port)
        except Exception as exc:  # the caller sees a closed connection; the reason is kept for the report
            self.errors.append(f"{type(exc).__name__}: {exc}")
            conn.close()
            return
        try:
            _pump(conn, remote)
        finally:
            for s in (conn, remote):
                with contextlib.suppress(OSError):
                    s.close()
            pf.close()

    def stop(self) -> None:
        if self._listener is not None:
            listener, self._listener = self._listener, None
            listener.close()


def _pump(a, b) -> None:
    """Copy bytes both ways until either side closes."""
    peers = {a: b, b: a}
    while True:
        readable, _, _ = select.select(list(peers), [], [], 300)
        if not readable:
            continue
        for s in readable:
            try:
                data = s.recv(65536)
            except OSError:
                return
            if not data:
                return
            peers[s].sendall(data)
