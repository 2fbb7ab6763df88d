"""Collect model inputs from concurrently running jobs into batches for one model call.

The BullMQ worker runs up to `max_batch` jobs at once (its concurrency). Each job hands its prepared input
to the batcher and waits. The batcher takes what is queued, waits up to `wait_s` for more when the batch
is not full, and runs the batch in the single model thread. With max_batch=1 jobs run one by one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from workers.worker.busy import BusyTracker


class Batcher:
    def __init__(
        self,
        run_batch: Callable[[list[Any]], list[Any]],
        max_batch: int,
        wait_s: float,
        busy: BusyTracker,
        on_batch: Callable[[int], None] = lambda size: None,
    ) -> None:
        self._run_batch = run_batch
        self._max = max_batch
        self._wait = wait_s
        self._busy = busy
        self._on_batch = on_batch
        self._pending: asyncio.Queue[tuple[Any, asyncio.Future[Any]]] = asyncio.Queue()
        # One model thread: the model is not called concurrently, and the event loop stays free to renew
        # BullMQ job locks while the model runs.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, item: Any) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self._pending.put((item, future))
        return await future

    async def _collect(self) -> list[tuple[Any, asyncio.Future[Any]]]:
        batch = [await self._pending.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._wait
        while len(batch) < self._max:
            if not self._pending.empty():
                batch.append(self._pending.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._pending.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            items = [item for item, _ in batch]
            self._on_batch(len(items))
            self._busy.begin()
            try:
                outputs = await loop.run_in_executor(self._executor, self._run_batch, items)
            except Exception as exc:  # the whole call failed: every job in it gets the error
                outputs = [exc] * len(items)
            finally:
                self._busy.end()
            for (_, future), output in zip(batch, outputs, strict=True):
                if future.done():
                    continue
                if isinstance(output, BaseException):
                    future.set_exception(output)
                else:
                    future.set_result(output)
