"""The static cost estimate (app/schema/cost.py): its figures, and what passes at the default.

Every operation the web app sends is read from its source, so a new one is priced here too.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from graphql import get_introspection_query, parse

from app.schema import build_schema
from app.schema.cost import (
    MUTATION_WEIGHT,
    TIME_TRAVEL_WEIGHT,
    UNPAGED_LIST_SIZE,
    introspection_list_sizes,
)
from app.settings import Settings

SETTINGS = Settings()
SCHEMA = build_schema(SETTINGS)
API_TS = Path(__file__).resolve().parents[2] / "frontend-example" / "src" / "api.ts"


def cost(query: str, variables: dict[str, Any] | None = None,
         operation_name: str | None = None) -> int:
    return SCHEMA.documents.cost(query, parse(query), operation_name, variables)


def web_app_operations() -> dict[str, str]:
    """The GraphQL documents of frontend-example/src/api.ts (each `graphql(`…`)`), by constant
    name, with the fragments they spread."""
    source = API_TS.read_text()
    fragments = {name: text for text, name in
                 re.findall(r"graphql\(`\s*(fragment (\w+) .*?)`\)", source, re.S)}
    documents = {}
    for name, text in re.findall(r"const (\w+) = graphql\(`(.*?)`\);", source, re.S):
        spread = [fragments[f] for f in fragments if f"...{f}" in text]
        documents[name] = "\n".join([text, *spread])
    return documents


def probe_query(aliases: int) -> str:
    """The amplification probe: nested lists under 30 aliases, each a small text."""
    nest = "employees { location { " * 4 + "employees { id }" + " } }" * 4
    return "{ " + " ".join(f"a{i}: locations {{ {nest} }}" for i in range(aliases)) + " }"


def test_each_field_costs_one_per_object_it_is_selected_on() -> None:
    assert cost("{ employee(id: 1) { id firstName location { id city } } }") == 6
    assert cost("{ projectionStatus { position lag } __typename }") == 4


def test_a_page_multiplies_what_is_selected_inside_it_by_its_first() -> None:
    # employees, totalCount, edges, then 10 × (node + id + firstName)
    assert cost("{ employees(first: 10) { totalCount edges { node { id firstName } } } }") == 33
    # the argument's default (50) when first is left out or null
    assert cost("{ employees { edges { node { id } } } }") == 2 + 50 * 2
    assert cost("{ employees(first: null) { edges { node { id } } } }") == 2 + 50 * 2
    assert cost("{ events(first: 3) { position type } }") == 1 + 3 * 2


def test_first_is_priced_within_the_page_size_limit() -> None:
    limit = SETTINGS.max_page_size
    assert cost("{ events(first: 100000) { position } }") == 1 + limit
    assert cost("{ events(first: -5) { position } }") == 1


def test_a_list_without_a_page_counts_as_the_unpaged_size_and_nested_lists_multiply() -> None:
    n = UNPAGED_LIST_SIZE
    assert cost("{ locations { id } }") == 1 + n
    assert cost("{ locations { id employees { id } } }") == 1 + n * (2 + n)


def test_aliases_are_summed() -> None:
    one = cost("{ locations { id } }")
    assert cost("{ a: locations { id } b: locations { id } c: locations { id } }") == 3 * one


def test_time_travel_weighs_the_field_and_everything_below_it() -> None:
    now = cost("{ location(id: 1) { id employees { id } } }")
    assert cost("{ location(id: 1, atPosition: 5) { id employees { id } } }") == (
        TIME_TRAVEL_WEIGHT * now
    )
    assert cost('{ location(id: 1, asOf: "2026-01-01T00:00:00Z") { id employees { id } } }') == (
        TIME_TRAVEL_WEIGHT * now
    )
    assert cost("{ location(id: 1, atPosition: null) { id employees { id } } }") == now


def test_a_mutation_field_costs_its_weight_and_its_selection_as_usual() -> None:
    query = "mutation { terminateEmployee(input: {employeeId: 1}) { __typename } }"
    assert cost(query) == MUTATION_WEIGHT + 1


def test_fragments_count_where_they_are_spread_and_every_branch_of_a_union_counts() -> None:
    spread = "query { employee(id: 1) { ...F } } fragment F on Employee { id firstName }"
    assert cost(spread) == cost("{ employee(id: 1) { id firstName } }")
    union = ("mutation { terminateEmployee(input: {employeeId: 1}) { "
             "... on TerminatePayload { position employeeId } ... on Error { message code } } }")
    assert cost(union) == MUTATION_WEIGHT + 4


def test_unknown_and_cyclic_fragments_leave_the_refusal_to_validation() -> None:
    assert cost("{ locations { ...Missing } }") == 1
    cyclic = "{ employee(id: 1) { ...A } } fragment A on Employee { id ...A }"
    assert cost(cyclic) == 2


def test_variables_set_the_figure_and_only_fixed_figures_are_kept() -> None:
    query = ("query($n: Int, $at: Int) { events(first: $n) { position } "
             "location(id: 1, atPosition: $at) { id } }")
    SCHEMA.documents.get(query)
    assert cost(query, {"n": 10}) == (1 + 10) + 2
    assert cost(query, {"n": 20, "at": 3}) == (1 + 20) + 2 * TIME_TRAVEL_WEIGHT
    assert cost(query, {}) == (1 + 100) + 2  # events' default page
    defaulted = "query($n: Int = 7) { events(first: $n) { position } }"
    assert cost(defaulted) == 1 + 7
    fixed = "{ events(first: 4) { position } }"
    prepared = SCHEMA.documents.get(fixed)
    assert prepared is not None
    cost(fixed)
    assert prepared.costs == {None: 5}
    prepared_with_variables = SCHEMA.documents.get(query)
    assert prepared_with_variables is not None and prepared_with_variables.costs == {}


def test_the_operation_named_is_the_one_priced() -> None:
    document = "query A { projectionStatus { lag } } query B { locations { id } }"
    assert cost(document, operation_name="A") == 2
    assert cost(document, operation_name="B") == 1 + UNPAGED_LIST_SIZE


@pytest.mark.parametrize("name", sorted(web_app_operations()))
def test_every_operation_of_the_web_app_passes_at_the_default(name: str) -> None:
    document = web_app_operations()[name]
    worst = {"first": SETTINGS.max_page_size, "at": 1, "id": 1, "after": 0, "stream": "s"}
    assert cost(document, worst) <= SETTINGS.max_query_cost


def test_the_web_app_operations_were_found() -> None:
    assert {"LOCATIONS", "LOCATION_PAGE", "EMPLOYEE_PAGE", "CREATE_EMPLOYEE", "EVENT_FEED"} <= (
        set(web_app_operations())
    )


def test_graphiqls_introspection_query_passes_at_the_default() -> None:
    query = get_introspection_query(
        descriptions=True, specified_by_url=True, directive_is_repeatable=True,
        schema_description=True, input_value_deprecation=True,
    )
    assert cost(query) <= SETTINGS.max_query_cost


def test_nested_introspection_still_multiplies() -> None:
    fields = introspection_list_sizes(SCHEMA._schema)[("__Type", "fields")]
    inner = "fields { name }"
    once = cost("{ __schema { types { " + inner + " } } }")
    nested = "fields { type { ofType { " + inner + " } } }"
    assert cost("{ __schema { types { " + nested + " } } }") > fields * once


def test_the_amplification_probe_is_far_over_the_default() -> None:
    assert cost(probe_query(30)) > 1000 * SETTINGS.max_query_cost
