"""app/slim.py: the Event and Queue stand-ins behave as asyncio's do where the sockets use them."""

from __future__ import annotations

import asyncio

from app.slim import Flag, Inbox


async def test_a_flag_wakes_every_waiter_and_a_cancelled_one_cancels_no_other() -> None:
    flag = Flag()
    first = asyncio.create_task(flag.wait())
    second = asyncio.create_task(flag.wait())
    third = asyncio.create_task(flag.wait())
    await asyncio.sleep(0)
    second.cancel()
    await asyncio.sleep(0)
    assert not first.done() and not third.done()
    flag.set()
    assert await first and await third
    assert second.cancelled()
    assert await flag.wait()  # set: at once
    flag.clear()
    assert not flag.is_set()


async def test_an_inbox_hands_items_over_in_order_and_waits_when_empty() -> None:
    inbox: Inbox[int] = Inbox()
    getting = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    assert not getting.done() and inbox.empty()
    for item in (1, 2, 3):
        inbox.put_nowait(item)
    assert await getting == 1
    assert inbox.qsize() == 2
    assert [await inbox.get(), await inbox.get()] == [2, 3]
