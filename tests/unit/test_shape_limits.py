"""The depth and alias limits (app/schema/limits.py) on documents of every shape, valid or not, as
the schema's prepared documents find them; and the codes of what the schema refuses before
executing anything."""

from __future__ import annotations

import pytest

from app.schema import build_schema
from app.settings import Settings

SCHEMA = build_schema(Settings(max_query_depth=3, max_aliases=3))
DEPTH_4 = "{ locations { employees { location { employees { id } } } } }"


def refusals(query: str) -> list[tuple[str, str | None]]:
    """What validating `query` finds (the schema keeps it with the prepared document)."""
    prepared = SCHEMA.documents.get(query)
    assert prepared is not None, query
    return [(e.message, (e.extensions or {}).get("code")) for e in prepared.errors]


@pytest.mark.parametrize("query", [
    DEPTH_4,
    "{ locations { ...F } } fragment F on Location { employees { location { employees { id } } } }",
    "{ locations { ... on Location { employees { ... on Employee { location { employees {"
    " __typename } } } } } } }",
    "subscription { locationChanged { location { employees { location { id } } } } }",
])
def test_an_operation_deeper_than_the_limit_is_refused_once(query: str) -> None:
    assert refusals(query) == [
        ("'anonymous' exceeds maximum operation depth of 3", "GRAPHQL_VALIDATION_FAILED")
    ]


def test_the_depth_counts_fields_with_selections_and_not_introspection() -> None:
    for query in ("{ locations { employees { location { id } } } }",
                  "{ __schema { types { fields { type { ofType { ofType { name } } } } } } }"):
        assert refusals(query) == [], query
    named = "query Deep " + DEPTH_4 + " query Flat { __typename }"
    assert refusals(named) == [
        ("'Deep' exceeds maximum operation depth of 3", "GRAPHQL_VALIDATION_FAILED")
    ]


def test_aliases_are_counted_at_every_spread_of_their_fragment() -> None:
    three = "{ ...Q } fragment Q on Query { a: __typename b: __typename c: __typename }"
    assert refusals(three) == []
    twice = "query One { ...Q x: __typename } query Other { ...Q }" \
            " fragment Q on Query { a: __typename b: __typename }"
    assert refusals(twice) == [("5 aliases found. Allowed: 3", "GRAPHQL_VALIDATION_FAILED")]


def test_an_unknown_fragment_or_a_fragment_cycle_is_left_to_its_own_rule() -> None:
    assert refusals("{ locations { ...Missing } }") == [
        ("Unknown fragment 'Missing'.", "GRAPHQL_VALIDATION_FAILED")
    ]
    assert refusals("{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }") == [
        ("Cannot spread fragment 'A' within itself via 'B'.", "GRAPHQL_VALIDATION_FAILED")
    ]


def test_fragments_spread_many_times_are_each_measured_once() -> None:
    # Ten fragments each spreading the next ten times: 10^10 spreads of the last one, which a
    # walk per spread (strawberry's limiters) would still be doing long after the run's timeout.
    fragments = " ".join(
        f"fragment F{n} on Query {{ {f'...F{n + 1} ' * 10} }}" for n in range(10)
    )
    query = "{ ...F0 } " + fragments + " fragment F10 on Query { a: __typename }"
    assert refusals(query) == [
        ("10000000000 aliases found. Allowed: 3", "GRAPHQL_VALIDATION_FAILED")
    ]


async def test_refusals_before_execution_carry_their_code() -> None:
    for query, refusal in {
        "{ locations { id }": ("Syntax Error: Expected Name, found <EOF>.", "GRAPHQL_PARSE_FAILED"),
        "{ locations { ...Missing } }": (
            "Unknown fragment 'Missing'.", "GRAPHQL_VALIDATION_FAILED"),
        "subscription { locationChanged { locationId } }": (
            "Subscriptions are served over a websocket (graphql-transport-ws or graphql-ws), "
            "not over HTTP.", "GRAPHQL_VALIDATION_FAILED"),
    }.items():
        result = await SCHEMA.execute(query)  # what the HTTP view runs
        assert result.data is None
        assert [(e.message, (e.extensions or {}).get("code")) for e in result.errors or []] == [
            refusal
        ], query
