"""Resolver decorators that take a description and keep their type.

Every field of the schema is described (tests/unit/test_schema_docs.py). strawberry's
`@strawberry.field(description=…)` is typed to return Any, which `mypy --strict` refuses as an
untyped decorator; these pass the resolver straight to strawberry, whose typed form returns the
StrawberryField.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import strawberry
from strawberry.types.field import StrawberryField

Decorator = Callable[[Callable[..., Any]], StrawberryField]


def field(description: str) -> Decorator:
    def described(resolver: Callable[..., Any]) -> StrawberryField:
        return strawberry.field(resolver, description=description)

    return described


def mutation(description: str) -> Decorator:
    def described(resolver: Callable[..., Any]) -> StrawberryField:
        return strawberry.mutation(resolver, description=description)

    return described


def subscription(description: str) -> Decorator:
    def described(resolver: Callable[..., Any]) -> StrawberryField:
        return strawberry.subscription(resolver, description=description)

    return described
