"""Expected failures as GraphQL types (union members), and the errors raised as GraphQL errors."""

from __future__ import annotations

from typing import Any

import strawberry
from graphql import GraphQLError

from app.domain import errors as domain


@strawberry.interface
class Error:
    message: str
    code: str


@strawberry.type
class FieldError:
    field: str
    message: str


@strawberry.type
class ValidationError(Error):
    fields: list[FieldError]


@strawberry.type
class NotFoundError(Error):
    entity: str
    id: int


@strawberry.type
class AlreadyExistsError(Error):
    entity: str
    id: int


@strawberry.type
class RuleViolationError(Error):
    pass


@strawberry.type
class ConflictError(Error):
    expected_version: int | None
    actual_version: int | None


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def to_graphql(error: domain.DomainError, allowed: tuple[type, ...]) -> Any:
    """The union member for a domain error, or a GraphQL error when the union has no such member."""
    result: Any
    if isinstance(error, domain.ValidationFailed):
        fields = [FieldError(field=_camel(p.field), message=p.message) for p in error.problems]
        result = ValidationError(message=error.message, code=error.code, fields=fields)
    elif isinstance(error, domain.NotFound):
        result = NotFoundError(
            message=error.message, code=error.code, entity=error.entity, id=error.entity_id
        )
    elif isinstance(error, domain.AlreadyExists):
        result = AlreadyExistsError(
            message=error.message, code=error.code, entity=error.entity, id=error.entity_id
        )
    elif isinstance(error, domain.Conflict):
        result = ConflictError(
            message=error.message, code=error.code,
            expected_version=error.expected, actual_version=error.actual,
        )
    elif isinstance(error, domain.RuleViolation):
        result = RuleViolationError(message=error.message, code=error.code)
    else:
        result = None
    if result is None or not isinstance(result, allowed):
        raise ClientError(error.message, error.code)
    return result


class ClientError(GraphQLError):
    """An error the client caused or must know about; shown as is, never masked."""

    def __init__(self, message: str, code: str, **extensions: Any) -> None:
        super().__init__(message, extensions={"code": code, **extensions})
