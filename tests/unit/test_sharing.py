"""app/schema/sharing.py: a member of a shared subscription, its queue by batch and its bound."""

from __future__ import annotations

import pytest

from app.read_model.hub import SubscriptionClosed
from app.schema.sharing import Member


class Socket:
    """What a member sends, as the websocket would (False once `gone`)."""

    def __init__(self, gone_after: int | None = None) -> None:
        self.sent: list[str] = []
        self.gone_after = gone_after

    async def send(self, text: str) -> bool:
        if self.gone_after is not None and len(self.sent) >= self.gone_after:
            return False
        self.sent.append(text)
        return True


async def test_a_member_sends_what_was_published_after_it_joined_under_its_prefix() -> None:
    member, socket = Member(since=5, limit=3), Socket()
    member.push(5, '"old"')  # a batch published before it joined, still in the engine's queue
    member.push(6, '"a"')
    member.push(6, '"b"')  # two changes of one batch count as one batch
    member.push(7, '"c"')
    member.push(None, '"last"')
    member.end()
    await member.deliver('{"id":"1","payload":', socket.send)
    assert socket.sent == ['{"id":"1","payload":"a"}', '{"id":"1","payload":"b"}',
                           '{"id":"1","payload":"c"}', '{"id":"1","payload":"last"}']


async def test_a_member_too_many_batches_behind_is_closed_and_its_queue_freed() -> None:
    member = Member(since=None, limit=2)
    for batch in (1, 2, 3):
        member.push(batch, f'"{batch}"')
    assert member.queue == []
    with pytest.raises(SubscriptionClosed) as closed:
        await member.deliver("", Socket().send)
    assert closed.value.code == "SUBSCRIBER_TOO_SLOW"


async def test_a_member_whose_client_is_gone_stops_sending() -> None:
    member, socket = Member(since=None, limit=10), Socket(gone_after=1)
    for batch in (1, 2, 3):
        member.push(batch, f'"{batch}"')
    await member.deliver("", socket.send)  # returns: no error for a client that left
    assert socket.sent == ['"1"}']
