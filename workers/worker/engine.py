"""What a worker needs from a model service (stt, tts, mt): fetch inputs, run a batch, store outputs."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from bullmq import Job


class Engine(ABC):
    service: str
    max_batch: int = 1
    batch_wait_s: float = 0.0  # how long a batch that is not full waits for more jobs

    @abstractmethod
    def load(self) -> None:
        """Load the model (blocking; runs in a thread)."""

    @abstractmethod
    async def prepare(self, job: Job) -> Any:
        """Turn job data into a model input. Raise bullmq.UnrecoverableError for bad input (no retry)."""

    @abstractmethod
    def run_batch(self, items: list[Any]) -> list[Any]:
        """Run the model on items (blocking; runs in the model thread); one output or Exception per item."""

    @abstractmethod
    async def finish(self, job: Job, output: Any) -> dict[str, Any]:
        """Store large outputs and return the job's result record (its BullMQ return value)."""

    @abstractmethod
    def audio_seconds(self, item: Any, output: Any) -> float:
        """Audio seconds to count for model_worker_audio_seconds_total (input for stt, output for tts)."""

    async def completed(self, job: Job) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Called after BullMQ recorded the completion (cleanup of inputs)."""

    @abstractmethod
    def describe(self) -> dict[str, str]:
        """Labels for model_worker_info (model, device)."""
