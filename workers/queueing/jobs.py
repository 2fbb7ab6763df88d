"""Job ids, job options and worker options.

Job ids carry the service ("stt-<hex>"), so GET /v1/jobs/{id} finds the queue without a lookup table.
"""

from __future__ import annotations

import re
import uuid

from workers.core.common import QueuePolicy

_JOB_ID = re.compile(r"^(?P<service>[A-Za-z0-9_.-]+?)-(?P<hex>[0-9a-f]{32})$")


def new_job_id(service: str) -> str:
    return f"{service}-{uuid.uuid4().hex}"


def service_of(job_id: str) -> str | None:
    match = _JOB_ID.match(job_id)
    return match.group("service") if match else None


def job_options(policy: QueuePolicy, job_id: str) -> dict[str, object]:
    """Options the producer sets on each job.

    Finished jobs (their results) are kept for result_ttl_s. BullMQ removes jobs older than that age when
    later jobs finish, so the age is a lower bound of how long a result stays readable.
    """
    keep = {"age": policy.result_ttl_s}
    return {
        "jobId": job_id,
        "attempts": policy.attempts,
        "backoff": {"type": "exponential", "delay": policy.backoff_ms},
        "removeOnComplete": keep,
        "removeOnFail": keep,
    }


def worker_options(policy: QueuePolicy, concurrency: int, name: str) -> dict[str, object]:
    return {
        **policy.connection_opts(),
        "concurrency": concurrency,
        "lockDuration": policy.lock_duration_ms,
        "stalledInterval": policy.stalled_interval_ms,
        "maxStalledCount": policy.max_stalled_count,
        "name": name,
        # The worker is started explicitly after the model is loaded (ready only then).
        "autorun": False,
    }
