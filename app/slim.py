"""Stand-ins for asyncio's Event and Queue for objects that exist once per websocket.

In Python 3.11 an `asyncio.Event` holds a deque for its waiters and an `asyncio.Queue` four
(getters, putters, items, and its `join` event's): an empty deque is ≈ 700 bytes, so a socket
with a queue and two events carried ≈ 4.5 KiB of them while idle. These have one waiter at most
(mostly the socket's or the subscription's own task) and allocate a future only while one waits.
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

T = TypeVar("T")


class Flag:
    """`asyncio.Event`, with a future only while someone waits."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        """Until set (at once if it is)."""
        while not self._set:
            # A future per waiter: one cancelled must not cancel what the others wait on.
            waiter = asyncio.get_running_loop().create_future()
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if self._waiters is not None and waiter in self._waiters:
                    self._waiters.remove(waiter)
        return True


class Inbox(Generic[T]):
    """`asyncio.Queue` without a bound, for one consuming task: what uvicorn's protocols use."""

    __slots__ = ("_flag", "_items")

    def __init__(self) -> None:
        self._items: list[T] = []
        self._flag = Flag()

    def put_nowait(self, item: T) -> None:
        self._items.append(item)
        self._flag.set()

    async def get(self) -> T:
        while not self._items:
            self._flag.clear()
            await self._flag.wait()
        return self._items.pop(0)

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)
