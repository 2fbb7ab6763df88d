"""The gateway's view of a job that finishes while the gateway reads it: "completed" always comes with the
result (found as a flake of the TTS image test: a completed TTS job without its audio_url)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import workers.gateway.backend as backend_module
from workers.gateway.backend import JobBackend


class FinishingJob:
    """One job that a worker completes right after the gateway's first read of it, whichever read that is."""

    def __init__(self) -> None:
        self.reads = 0

    def _tick(self) -> bool:
        self.reads += 1
        return self.reads > 1  # done as of the second read

    async def state(self, _job_id: str) -> str:
        return "completed" if self._tick() else "active"

    async def job(self, _queue, job_id: str):
        done = self._tick()
        return SimpleNamespace(
            id=job_id,
            data={"owner": "k1", "text": "hello"},
            returnvalue={"audio_key": "blob:1", "format": "wav"} if done else None,
            failedReason=None,
            attemptsMade=0,
            timestamp=1,
            processedOn=2,
            finishedOn=3 if done else None,
        )


def test_a_job_finishing_between_the_reads_is_never_completed_without_its_result(monkeypatch):
    finishing = FinishingJob()
    monkeypatch.setattr(backend_module.Job, "fromId", staticmethod(finishing.job))
    backend = JobBackend.__new__(JobBackend)  # no Redis: the two reads are the whole of get()
    backend.queues = {"tts": SimpleNamespace(getJobState=finishing.state)}
    view = asyncio.run(backend.get("tts-" + "0" * 32))
    assert finishing.reads == 2
    assert view is not None
    assert view.state != "completed" or view.result is not None, view
