"""Inputs built by `app.schema.inputs` are exactly what strawberry's own conversion builds."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest
from graphql import GraphQLInputObjectType, GraphQLNonNull, get_named_type
from strawberry.types.arguments import InputContext, convert_argument
from strawberry.types.base import StrawberryObjectDefinition

from app.schema import build_schema
from app.schema.inputs import DEFINITION, InputBuilder

SCHEMA = build_schema()
SAMPLES: dict[str, Any] = {"Int": 7, "String": "Line cook", "Date": dt.date(1990, 1, 2),
                           "Boolean": True, "Float": 1.5}
INPUTS = sorted(
    (t for t in SCHEMA._schema.type_map.values()
     if isinstance(t, GraphQLInputObjectType) and not t.name.startswith("__")),
    key=lambda t: t.name,
)


def strawberry_conversion(cls: type, value: dict[str, Any]) -> Any:
    """What strawberry builds without the hook."""
    definition: StrawberryObjectDefinition = cls.__strawberry_definition__  # type: ignore[attr-defined]
    hook, definition.from_input = definition.from_input, None
    try:
        return convert_argument(value, cls, SCHEMA.schema_converter.scalar_registry,
                                SCHEMA.config)
    finally:
        definition.from_input = hook


def values_of(graphql_type: GraphQLInputObjectType) -> list[dict[str, Any]]:
    """Every field given; the optional ones null; the optional ones left out."""
    full = {name: SAMPLES[get_named_type(field.type).name]
            for name, field in graphql_type.fields.items()}
    optional = [name for name, field in graphql_type.fields.items()
                if not isinstance(field.type, GraphQLNonNull)]
    return [full, {**full, **dict.fromkeys(optional)},
            {k: v for k, v in full.items() if k not in optional}]


def test_every_mutation_input_has_its_builder() -> None:
    names = {t.name for t in INPUTS}
    assert {"CreateLocationInput", "CreateEmployeeInput", "AssignEmployeeToLocationInput",
            "ChangeEmployeeJobTitleInput", "TerminateEmployeeInput"} <= names
    for graphql_type in INPUTS:
        assert isinstance(graphql_type.extensions[DEFINITION].from_input, InputBuilder)


@pytest.mark.parametrize("graphql_type", INPUTS, ids=lambda t: t.name)
def test_an_input_is_built_as_strawberry_builds_it(graphql_type: GraphQLInputObjectType) -> None:
    definition = graphql_type.extensions[DEFINITION]
    cls = definition.origin
    context = InputContext(None, SCHEMA.config, SCHEMA.schema_converter.scalar_registry, ())
    for value in values_of(graphql_type):
        built = definition.from_input(cls, value, context)
        expected = strawberry_conversion(cls, value)
        assert type(built) is cls
        assert dataclasses.asdict(built) == dataclasses.asdict(expected), value
