"""roles/queue on the stack: Redis as the cluster path runs it on every target (a StatefulSet on a volume, its
password in a Secret generated on first run)."""

from __future__ import annotations

import uuid

from tests.e2e import kube_checks as k
from tests.e2e import stack

SECRET = k.defaults("queue")["queue_secret_name"]
POD = "redis-0"


def redis_cli(*args: str, auth: bool = True) -> tuple[int | None, str]:
    # The password stays in the pod: the shell reads it from the container's environment (from the Secret).
    cmd = 'redis-cli -a "$REDIS_PASSWORD" --no-auth-warning "$@"' if auth else 'redis-cli "$@"'
    return k.exec_in(POD, ["sh", "-c", cmd, "redis-cli", *args], container="redis")


def test_redis_runs_on_the_real_node_with_its_data_on_a_bound_volume():
    sts = k.apps().read_namespaced_stateful_set("redis", k.namespace())
    assert sts.status.ready_replicas == 1, sts.status
    pvc = k.core().read_namespaced_persistent_volume_claim("data-redis-0", k.namespace())
    assert pvc.status.phase == "Bound", pvc.status
    pod = k.core().read_namespaced_pod(POD, k.namespace())
    assert pod.spec.node_name == k.real_node_name(), pod.spec.node_name


def test_redis_refuses_anonymous_clients_and_answers_the_secrets_password():
    rc, out = redis_cli("ping", auth=False)
    assert "NOAUTH" in out, (rc, out)
    assert redis_cli("ping") == (0, "PONG\n")
    # The password Redis runs with is the Secret's (compared by digest: neither is printed).
    rc, digest = k.exec_in(POD, ["sh", "-c", 'printf %s "$REDIS_PASSWORD" | sha256sum'], container="redis")
    assert rc == 0 and digest.split()[0] == k.sha256(k.secret_value(SECRET, "password"))


def test_the_secrets_url_names_the_in_cluster_service():
    url = k.secret_value(SECRET, "url")
    password = k.secret_value(SECRET, "password")
    assert len(password) >= 32
    assert url == f"redis://:{password}@redis.{k.namespace()}.svc:6379/0", "the Secret's url (not shown) differs"


def test_the_namespace_enforces_the_restricted_pod_security_standard():
    ns = k.core().read_namespace(k.namespace())
    assert ns.metadata.labels.get("pod-security.kubernetes.io/enforce") == "restricted", ns.metadata.labels


def test_a_key_written_before_the_pod_is_replaced_is_read_back_from_the_volume():
    key, value = f"molecule:persisted:{uuid.uuid4().hex[:8]}", "yes"
    assert redis_cli("set", key, value, "EX", "600") == (0, "OK\n")
    k.replace_pod(POD, timeout=120)
    try:
        assert redis_cli("get", key) == (0, f"{value}\n")
    finally:
        redis_cli("del", key)
    # The rest of the stack reconnects: the gateway answers again (the load tests and scenarios after this need it).
    stack.wait_for("the gateway to answer /readyz", stack.gateway_ready, timeout=60, interval=2)

