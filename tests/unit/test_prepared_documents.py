"""The schema's prepared documents (parsed and validated once per query text), and how the
rebuild pauses the garbage collector (how a long-running process configures it, seen in a fresh
interpreter: tests/integration/test_garbage_collector.py)."""

from __future__ import annotations

import gc

import pytest

from app.runtime import collector_paused
from app.schema import PreparedDocuments, build_schema
from app.settings import Settings

SCHEMA = build_schema(Settings(max_query_depth=3, max_aliases=2, max_query_tokens=50))


def test_a_query_text_is_parsed_and_validated_once_and_the_oldest_is_forgotten() -> None:
    documents = PreparedDocuments(SCHEMA, SCHEMA.documents.rules, 50, size=2)
    first = documents.get("{ __typename }")
    assert first is not None and first.errors == []
    assert documents.get("{ __typename }") is first
    too_deep = documents.get("{ locations { employees { location { employees { id } } } } }")
    assert too_deep is not None
    assert [e.message for e in too_deep.errors] == [
        "'anonymous' exceeds maximum operation depth of 3"
    ]
    documents.get("{ projectionStatus { lag } }")  # a third text: the least recently used goes
    assert len(documents) == 2
    assert documents.get("{ __typename }") is not first


def test_a_text_that_does_not_parse_is_not_kept() -> None:
    documents = PreparedDocuments(SCHEMA, SCHEMA.documents.rules, 50)
    assert documents.get("{ locations { id }") is None
    assert documents.get("{ " + "a: __typename " * 30 + "}") is None  # over 50 tokens
    assert len(documents) == 0


async def test_refusals_are_the_same_the_first_time_and_from_the_prepared_document() -> None:
    cases = {
        "{ locations { id }": "Syntax Error: Expected Name, found <EOF>.",
        "{ " + "a: __typename " * 30 + "}":
            "Syntax Error: Document contains more than 50 tokens. Parsing aborted.",
        "{ a: __typename b: __typename c: __typename }": "3 aliases found. Allowed: 2",
        "{ nope }": "Cannot query field 'nope' on type 'Query'.",
    }
    for query, message in cases.items():
        for _ in range(2):
            result = await SCHEMA.execute(query)
            assert result.data is None
            assert [e.message for e in result.errors or []] == [message], query
    assert (await SCHEMA.execute("{ a: __typename }")).data == {"a": "Query"}


def test_a_paused_collector_runs_again_after_the_job_even_when_it_fails() -> None:
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("the rebuild failed")
    assert gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()  # it was off before: it stays off
    finally:
        gc.enable()
