"""The process-local document cache's rules alone (inside a running service on Valkey:
tests/integration/test_document_cache.py)."""

from __future__ import annotations

from app.read_model.cache import DocumentCache
from tests.harness.projection_support import batch, titles


def test_the_feed_keeps_entries_current_and_never_older() -> None:
    cache = DocumentCache(10)
    cache.follow(10)
    cache.put("employee", [1], [{"id": 1, "job_title": "Cook"}], 10, cache.epoch)
    cache.apply(batch(10, 12, (12, 1, "Chef")))
    assert titles(cache, 1) == ["Chef"]
    # a read that saw an older state than the feed must not win
    cache.put("employee", [1], [{"id": 1, "job_title": "Cook"}], 11, cache.epoch)
    assert titles(cache, 1) == ["Chef"]
    # a repeated notice is ignored
    cache.apply(batch(10, 12, (12, 1, "Cook")))
    assert titles(cache, 1) == ["Chef"]


def test_it_answers_nothing_behind_a_newer_checkpoint_after_a_gap_or_when_lost() -> None:
    cache = DocumentCache(10)
    assert titles(cache, 1) == [None]  # not following the feed yet
    cache.follow(5)
    cache.put("employee", [1, 2], [{"id": 1, "job_title": "A"}, None], 5, cache.epoch)
    assert titles(cache, 1, 2) == ["A", None] and cache.lookup("employee", [2])[0] == (5, None)
    cache.saw(7)  # someone read checkpoint 7 whose batch the feed has not delivered yet
    assert cache.lookup("employee", [1]) == [None]
    cache.apply(batch(5, 7))
    assert titles(cache, 1) == ["A"]
    cache.apply(batch(9, 11, (11, 2, "B")))  # (7, 9] never came: everything else is suspect
    assert titles(cache, 1, 2) == [None, "B"]
    epoch = cache.epoch
    cache.stop()
    cache.put("employee", [1], [{"id": 1, "job_title": "A"}], 11, epoch)
    assert cache.lookup("employee", [1, 2]) == [None, None] and len(cache) == 0


def test_a_read_that_began_before_a_reset_is_not_stored_and_size_is_bounded() -> None:
    cache = DocumentCache(3)
    cache.follow(1)
    epoch = cache.epoch
    cache.follow(2)  # reconnected while the read was on its way
    cache.put("employee", [1], [{"id": 1, "job_title": "A"}], 1, epoch)
    assert len(cache) == 0
    cache.put("employee", [1, 2, 3, 4], [{"id": i, "job_title": "T"} for i in range(1, 5)], 2,
              cache.epoch)
    assert len(cache) == 3 and cache.lookup("employee", [1])[0] is None
