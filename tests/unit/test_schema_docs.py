"""The schema documents itself, and `schema.graphql` is what the service serves.

Every type, field, argument, input field and enum value carries a description (GraphiQL's
documentation pane, and every other client's, shows them), and the SDL committed at the
repository's top is exactly `python -m app export-schema`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLUnionType,
    specified_scalar_types,
)

from app.cli import main
from app.schema import build_schema

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "schema.graphql"


def undocumented(schema: GraphQLSchema) -> list[str]:
    """Every element of `schema` without a description, as `Type`, `Type.field`,
    `Type.field(argument)` or `Enum.VALUE`; introspection types and GraphQL's own scalars
    (Int, Float, String, Boolean, ID) are the specification's to describe."""
    missing: list[str] = []
    for name, kind in sorted(schema.type_map.items()):
        if name.startswith("__") or name in specified_scalar_types:
            continue
        if not kind.description:
            missing.append(name)
        if isinstance(kind, GraphQLObjectType | GraphQLInterfaceType):
            for field_name, field in kind.fields.items():
                if not field.description:
                    missing.append(f"{name}.{field_name}")
                missing.extend(
                    f"{name}.{field_name}({arg_name})"
                    for arg_name, arg in field.args.items() if not arg.description
                )
        elif isinstance(kind, GraphQLInputObjectType):
            missing.extend(
                f"{name}.{field_name}"
                for field_name, field in kind.fields.items() if not field.description
            )
        elif isinstance(kind, GraphQLEnumType):
            missing.extend(
                f"{name}.{value_name}"
                for value_name, value in kind.values.items() if not value.description
            )
    return missing


def test_every_element_of_the_schema_is_described() -> None:
    missing = undocumented(build_schema()._schema)
    assert missing == [], f"{len(missing)} schema elements have no description:\n" + "\n".join(
        missing
    )


def test_the_walk_covers_every_kind_of_element() -> None:
    """The check itself: a schema with one undescribed element of each kind reports each."""
    schema = build_schema()._schema
    names = {
        "Query": GraphQLObjectType, "Error": GraphQLInterfaceType,
        "CreateLocationInput": GraphQLInputObjectType, "ChangeKind": GraphQLEnumType,
        "CreateLocationResult": GraphQLUnionType,
    }
    for name, kind in names.items():
        assert isinstance(schema.type_map[name], kind)
    schema.type_map["CreateLocationResult"].description = None
    schema.type_map["Query"].fields["location"].args["asOf"].description = None
    schema.type_map["Error"].fields["code"].description = None
    schema.type_map["CreateLocationInput"].fields["city"].description = None
    schema.type_map["ChangeKind"].values["REMOVED"].description = None
    assert undocumented(schema) == [
        "ChangeKind.REMOVED", "CreateLocationInput.city", "CreateLocationResult",
        "Error.code", "Query.location(asOf)",
    ]


def test_schema_graphql_is_the_exported_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export-schema"]) == 0
    exported = capsys.readouterr().out
    committed = SCHEMA_FILE.read_text(encoding="utf-8") if SCHEMA_FILE.exists() else ""
    assert committed == exported, (
        "schema.graphql differs from the schema the service serves; "
        "update it with: python -m app export-schema > schema.graphql"
    )
