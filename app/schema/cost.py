"""The static cost of an operation: an upper estimate of the fields it makes the server resolve.

Depth, alias and token limits do not bound work, because nested lists multiply: 30 aliases of
`locations { employees { location { employees { … } } } }` are a small text and millions of
fields. So every operation is priced before it executes, from its text, its variables and the
schema alone (no read of the data), and refused when over `MAX_QUERY_COST`:

- every field selected costs 1 for each object it is selected on (aliases are fields: summed);
- a list multiplies what is selected inside it by its size: its `first` (clamped to
  `MAX_PAGE_SIZE`), the `first` of the connection it belongs to (`employees { edges }`), for
  introspection lists their mean length in this schema, otherwise `UNPAGED_LIST_SIZE`;
- a field read at a point of the past (`asOf` / `atPosition` given) costs `TIME_TRAVEL_WEIGHT`
  times as much, with everything inside it: its reads are historic lookups, not current
  documents;
- a mutation field costs `MUTATION_WEIGHT`: a command, an append and a wait for the read model;
- fragments count where they are spread; every branch of a union or interface is counted.

The same idea as GitHub's node limit and Shopify's calculated query cost, priced in resolved
fields because that is what a request's CPU time follows here. docs/security.md has examples.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLField,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNamedType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLUnionType,
    InlineFragmentNode,
    IntValueNode,
    NullValueNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    ValueNode,
    VariableNode,
    get_named_type,
    value_from_ast_untyped,
)
from graphql.type.introspection import SchemaMetaFieldDef, TypeMetaFieldDef

UNPAGED_LIST_SIZE = 50
"""What a list without `first` (`locations`, `Location.employees`) is taken to hold."""
TIME_TRAVEL_WEIGHT = 2
MUTATION_WEIGHT = 10
TIME_TRAVEL_ARGUMENTS = ("asOf", "atPosition")


def introspection_list_sizes(schema: GraphQLSchema) -> dict[tuple[str, str], int]:
    """How long each introspection list of this schema is on average (rounded up), counting
    the types, fields and directives that have none: `__schema { types { fields { args } } }`
    (what GraphiQL asks) is then priced at what it really resolves, while nesting that
    multiplies (`fields { type { fields … } }`) still multiplies."""
    types = list(schema.type_map.values())
    fields = [f for t in types for f in (getattr(t, "fields", None) or {}).values()]
    directives = list(schema.directives)

    def mean(items: list[Any], attribute: str) -> int:
        total = sum(len(getattr(item, attribute, None) or ()) for item in items)
        return -(-total // max(len(items), 1))

    abstract = [t for t in types if isinstance(t, GraphQLInterfaceType | GraphQLUnionType)]
    possible = sum(len(schema.get_possible_types(t)) for t in abstract)
    return {
        ("__Schema", "types"): len(types),
        ("__Schema", "directives"): len(directives),
        ("__Type", "fields"): mean(types, "fields"),
        ("__Type", "inputFields"): mean(types, "fields"),
        ("__Type", "enumValues"): mean(types, "values"),
        ("__Type", "interfaces"): mean(types, "interfaces"),
        ("__Type", "possibleTypes"): -(-possible // max(len(types), 1)),
        ("__Field", "args"): mean(fields, "args"),
        ("__Directive", "args"): mean(directives, "args"),
        ("__Directive", "locations"): mean(directives, "locations"),
    }


@dataclass(slots=True)
class Estimate:
    cost: int
    uses_variables: bool
    """Whether a variable changed the figure (otherwise it holds for every request)."""


@dataclass
class CostModel:
    """Prices operations of one schema (see the module's docstring)."""

    schema: GraphQLSchema
    max_page_size: int
    _introspection: dict[tuple[str, str], int] = field(init=False)

    def __post_init__(self) -> None:
        self._introspection = introspection_list_sizes(self.schema)

    def estimate(
        self, operation: OperationDefinitionNode,
        fragments: Mapping[str, FragmentDefinitionNode], variables: Mapping[str, Any] | None,
    ) -> Estimate:
        defaults = {
            definition.variable.name.value: value_from_ast_untyped(definition.default_value)
            for definition in operation.variable_definitions or () if definition.default_value
        }
        walk = _Walk(self, fragments, {**defaults, **(variables or {})})
        root = self.schema.get_root_type(operation.operation)
        if root is None:
            return Estimate(0, False)
        weight = MUTATION_WEIGHT if operation.operation == OperationType.MUTATION else 1
        cost = walk.selections(operation.selection_set, root, 1, None, weight, ())
        return Estimate(cost, walk.uses_variables)


class _Walk:
    """One estimate's traversal: its variables, and whether any of them was needed."""

    def __init__(self, model: CostModel, fragments: Mapping[str, FragmentDefinitionNode],
                 variables: Mapping[str, Any]) -> None:
        self.model, self.fragments, self.variables = model, fragments, variables
        self.uses_variables = False

    def selections(
        self, selection_set: SelectionSetNode, parent: GraphQLNamedType, times: int,
        page: int | None, weight: int, spread: tuple[str, ...],
    ) -> int:
        """The cost of `selection_set` selected on `times` objects of type `parent`; `page` is
        the page size of the connection they belong to, `weight` what each field costs."""
        cost = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                cost += self.field(selection, parent, times, page, weight, spread)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                on = self.model.schema.get_type(condition.name.value) if condition else parent
                cost += self.selections(
                    selection.selection_set, on or parent, times, page, weight, spread
                )
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = self.fragments.get(name)
                if fragment is None or name in spread:  # unknown or cyclic: validation says so
                    continue
                on = self.model.schema.get_type(fragment.type_condition.name.value)
                cost += self.selections(
                    fragment.selection_set, on or parent, times, page, weight, (*spread, name)
                )
        return cost

    def field(
        self, node: FieldNode, parent: GraphQLNamedType, times: int, page: int | None,
        weight: int, spread: tuple[str, ...],
    ) -> int:
        definition = self._definition(parent, node.name.value)
        cost = times * weight
        if definition is None:  # __typename, or a field validation refuses
            return cost
        arguments = {argument.name.value: argument.value for argument in node.arguments or ()}
        if any(self._given(arguments.get(name)) for name in TIME_TRAVEL_ARGUMENTS):
            times, cost = times * TIME_TRAVEL_WEIGHT, cost * TIME_TRAVEL_WEIGHT
        first = self._first(definition, arguments)
        size = self._list_size(parent, node.name.value, definition, first, page)
        if size is not None:
            times *= size
        if node.selection_set is None:
            return cost + (times if size is not None else 0)  # a list of scalars: its items
        inner = get_named_type(definition.type)
        return cost + self.selections(node.selection_set, inner, times, first, 1, spread)

    def _definition(self, parent: GraphQLNamedType, name: str) -> GraphQLField | None:
        if name == "__schema":
            return SchemaMetaFieldDef
        if name == "__type":
            return TypeMetaFieldDef
        fields = getattr(parent, "fields", None)
        return fields.get(name) if fields else None

    def _list_size(self, parent: GraphQLNamedType, name: str, definition: GraphQLField,
                   first: int | None, page: int | None) -> int | None:
        """How many items the field's list holds (None: it is not a list)."""
        kind = definition.type
        if isinstance(kind, GraphQLNonNull):
            kind = kind.of_type
        if not isinstance(kind, GraphQLList):
            return None
        bound = self.model._introspection.get((parent.name, name))
        if bound is not None:
            return bound
        if first is not None:
            return first
        if page is not None and isinstance(parent, GraphQLObjectType):
            return page  # a connection's edges: as many as its `first`
        return UNPAGED_LIST_SIZE

    def _first(self, definition: GraphQLField, arguments: Mapping[str, ValueNode]) -> int | None:
        """The page size this field asks for (its `first`, or that argument's default), within
        what the server allows; None when the field takes no `first`."""
        argument = definition.args.get("first")
        if argument is None:
            return None
        value = self._value(arguments.get("first"))
        if not isinstance(value, int) or isinstance(value, bool):
            default = argument.default_value
            value = default if isinstance(default, int) else self.model.max_page_size
        return min(max(value, 0), self.model.max_page_size)

    def _given(self, node: ValueNode | None) -> bool:
        return node is not None and self._value(node) is not None

    def _value(self, node: ValueNode | None) -> object:
        """A literal's value, or the variable's (noting that the estimate depends on it)."""
        if node is None or isinstance(node, NullValueNode):
            return None
        if isinstance(node, VariableNode):
            self.uses_variables = True
            return self.variables.get(node.name.value)
        if isinstance(node, IntValueNode):
            return int(node.value)
        return node  # any other literal: given, of no size
