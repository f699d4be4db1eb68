"""Expected failures as GraphQL types (union members), and the errors raised as GraphQL errors."""

from __future__ import annotations

from typing import Any

import strawberry
from graphql import GraphQLError, GraphQLSyntaxError
from strawberry.exceptions import MissingQueryError
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError

from app.domain import errors as domain

# What strawberry raises before executing when the request names no operation the document
# has, or one of a kind its transport does not carry: the client's mistake, not a bug.
OPERATION_REFUSALS = (CannotGetOperationTypeError, InvalidOperationTypeError, MissingQueryError)


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


def with_code(error: GraphQLError, code: str) -> GraphQLError:
    """`error` with `code` in its extensions, unless it already carries one."""
    if not (error.extensions or {}).get("code"):
        error.extensions = {**(error.extensions or {}), "code": code}
    return error


def with_refusal_code(error: GraphQLError) -> GraphQLError:
    """`error` with its code when it is a refusal before execution that came without one: a
    document that does not parse, or that names no operation the transport can run."""
    if isinstance(error, GraphQLSyntaxError):
        return with_code(error, "GRAPHQL_PARSE_FAILED")
    if isinstance(error.original_error, OPERATION_REFUSALS):
        return with_code(error, "GRAPHQL_VALIDATION_FAILED")
    return error
