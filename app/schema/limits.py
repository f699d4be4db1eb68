"""The depth and alias limits (MAX_QUERY_DEPTH, MAX_ALIASES) as one validation rule that any
document can pass through in time proportional to its size.

It replaces strawberry's QueryDepthLimiter and MaxAliasesLimiter, which measured the document
as soon as they were created, before any other rule had looked at it:
- a spread of a fragment the document does not define raised KeyError in the depth limiter (a
  500 and a traceback, even without a token);
- both walked a fragment again at each of its spreads, so a few fragments each spreading the
  next ten times (`fragment F0 on Query { ...F1 ...F1 … }`, 650 bytes) kept validation busy for
  minutes.
Here each fragment is measured once, and what is not these limits' business counts nothing and
is left to the rule that reports it: unknown fragments (KnownFragmentNames) and fragment cycles
(NoFragmentCycles).

What is counted is unchanged: the depth is the number of fields with a selection set on the
deepest path (introspection fields such as `__schema` count none, so GraphiQL's introspection
query is never refused for its depth); the aliases are those of every operation with each
fragment's counted at each of its spreads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationRule,
)


def shape_limits_rule(max_depth: int, max_aliases: int) -> type[ValidationRule]:
    """A rule refusing each operation deeper than `max_depth` (one error naming it), and a
    document with more than `max_aliases` aliases in all (one error)."""

    class ShapeLimits(ValidationRule):
        def enter_document(self, node: DocumentNode, *_args: Any) -> None:
            shapes = Shapes(node)
            aliases = 0
            for definition in node.definitions:
                if not isinstance(definition, OperationDefinitionNode):
                    continue
                shape = shapes.of(definition.selection_set)
                if shape.depth > max_depth:
                    name = definition.name.value if definition.name else "anonymous"
                    self.report_error(GraphQLError(
                        f"'{name}' exceeds maximum operation depth of {max_depth}", definition
                    ))
                aliases += shape.aliases
            if aliases > max_aliases:
                self.report_error(GraphQLError(f"{aliases} aliases found. Allowed: {max_aliases}"))

    return ShapeLimits


@dataclass(frozen=True, slots=True)
class Shape:
    depth: int
    aliases: int


NOTHING = Shape(0, 0)


class Shapes:
    """The shapes of one document's selection sets, each fragment's measured once."""

    def __init__(self, document: DocumentNode) -> None:
        self.fragments = {
            definition.name.value: definition for definition in document.definitions
            if isinstance(definition, FragmentDefinitionNode)
        }
        self.measured: dict[str, Shape] = {}
        self.measuring: set[str] = set()

    def of(self, selection_set: SelectionSetNode) -> Shape:
        """Its depth (levels of fields with selections on its deepest path) and aliases."""
        depth = aliases = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                if selection.alias is not None:
                    aliases += 1
                if selection.selection_set is None:
                    continue
                inner = self.of(selection.selection_set)
                levels = 0 if selection.name.value.startswith("__") else 1 + inner.depth
            elif isinstance(selection, InlineFragmentNode):
                inner = self.of(selection.selection_set)
                levels = inner.depth
            elif isinstance(selection, FragmentSpreadNode):
                inner = self.fragment(selection.name.value)
                levels = inner.depth
            else:
                continue
            depth, aliases = max(depth, levels), aliases + inner.aliases
        return Shape(depth, aliases)

    def fragment(self, name: str) -> Shape:
        """A fragment's shape; nothing for an unknown one, or one spread inside itself (both
        make the document invalid anyway: their own rules say so)."""
        if name in self.measured:
            return self.measured[name]
        definition = self.fragments.get(name)
        if definition is None or name in self.measuring:
            return NOTHING
        self.measuring.add(name)
        self.measured[name] = shape = self.of(definition.selection_set)
        self.measuring.discard(name)
        return shape
