"""One long-lived thread running blocking calls for the event loop, cheaper per call than
`loop.run_in_executor` on a ThreadPoolExecutor.

The SQLite adapter hands every read and every group commit to a thread of its own, so a command
crosses threads at least twice. Through a ThreadPoolExecutor each crossing builds a work item and
a concurrent Future, takes the executor's locks, counts its threads, and chains that Future to an
asyncio one with callbacks on both sides. Here a call is one queue put, and one
`call_soon_threadsafe` back with the outcome. A call cancelled before the thread reaches it does
not run, as with an executor.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
_Call = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[[], Any]]


class WorkerThread:
    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    async def call(self, work: Callable[[], T]) -> T:
        """`work()` on the thread, after every call made before it."""
        return await self.submit(work)

    def submit(self, work: Callable[[], T]) -> asyncio.Future[T]:
        """`work()` on the thread, after every call made before it; its outcome is the future's
        (cancelled before the thread reaches it, it does not run)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._calls.put((loop, future, work))
        return future

    def shutdown(self) -> None:
        """Finish the calls already made, then stop the thread."""
        if self._thread.is_alive():
            self._calls.put(None)
            self._thread.join()

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            loop, future, work = call
            if future.cancelled():
                continue
            try:
                result = work()
            except BaseException as exc:  # handed to the caller, as an executor does
                _settle(loop, _fail, future, exc)
            else:
                _settle(loop, _succeed, future, result)


def _settle(loop: asyncio.AbstractEventLoop, how: Callable[..., None], *args: Any) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
        loop.call_soon_threadsafe(how, *args)


def _succeed(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
