"""The dubbing job as a BullMQ flow: a parent job in the ``dubbing`` queue whose children are the stage jobs.

The gateway adds the parent with its first child, the STT job (a flow, in one MULTI/EXEC: both or neither). The
orchestrator (workers/dubbing/orchestrator.py) runs the parent each time its children are done: it reads their
return values (``Job.getChildrenValues``), adds the next stage's children with the parent named, and moves the
parent back to waiting-children (BullMQ's "process step jobs" pattern) until the last stage. Every child has
``failParentOnFailure``: a stage that fails (its attempts used up, or bad input) fails the dubbing job, and the
gateway names the stage. Child ids derive from the dubbing id, the stage and the index, so a step run twice (a
retry after a crash) adds nothing twice: BullMQ keeps the first job of an id.
"""

from __future__ import annotations

import uuid
from typing import Any

from workers.core.common import QueuePolicy
from workers.queueing.jobs import job_options

STAGES = ("stt", "mt", "tts", "lipsync")


def child_id(dubbing_id: str, stage: str, index: int = 0) -> str:
    """A stage job's id: ``<stage>-<32 hex>`` (the gateway's id form), the same for the same dubbing job, stage and
    index."""
    return f"{stage}-{uuid.uuid5(uuid.NAMESPACE_URL, f'{dubbing_id}/{stage}/{index}').hex}"


def child_options(policy: QueuePolicy, job_id: str, parent_id: str, parent_queue: str) -> dict[str, Any]:
    return {**job_options(policy, job_id), "failParentOnFailure": True,
            "parent": {"id": parent_id, "queue": parent_queue}}


def gateway_flow(policy: QueuePolicy, queues: dict[str, str], dubbing_id: str, data: dict[str, Any],
                 stt_data: dict[str, Any]) -> dict[str, Any]:
    """The tree the gateway adds: the dubbing job and its STT child."""
    stt_id = child_id(dubbing_id, "stt")
    return {
        "name": "dubbing",
        "queueName": queues["dubbing"],
        "data": {**data, "step": "stt", "stages": {"stt": [stt_id]}},
        "opts": job_options(policy, dubbing_id),
        "children": [{"name": "stt", "queueName": queues["stt"], "data": stt_data,
                      "opts": {**job_options(policy, stt_id), "failParentOnFailure": True}}],
    }
