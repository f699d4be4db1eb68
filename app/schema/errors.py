"""Expected failures as GraphQL types (union members), and the errors raised as GraphQL errors."""

from __future__ import annotations

from typing import Any

import strawberry
from graphql import (
    DocumentNode,
    GraphQLError,
    GraphQLSchema,
    GraphQLSyntaxError,
    ValuesOfCorrectTypeRule,
    get_operation_ast,
)
from graphql.execution import Executor
from strawberry.exceptions import MissingQueryError
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError

from app.domain import errors as domain

# What strawberry raises before executing when the request names no operation the document
# has, or one of a kind its transport does not carry: the client's mistake, not a bug.
OPERATION_REFUSALS = (CannotGetOperationTypeError, InvalidOperationTypeError, MissingQueryError)


@strawberry.interface(description=(
    "An expected reason a mutation was refused, returned as a member of its result union. "
    "Nothing was written. Other failures (authentication, limits, outages) are GraphQL errors "
    "with `extensions.code` instead."
))
class Error:
    message: str = strawberry.field(description="What went wrong, in words fit for a person.")
    code: str = strawberry.field(description=(
        "What went wrong, for programs: VALIDATION_FAILED (an input field breaks a rule), "
        "NOT_FOUND (an id that names no live location or employee), ALREADY_EXISTS (a chosen id "
        "is taken), EMPLOYEE_ALREADY_AT_LOCATION (a move to where the employee already works), "
        "CONCURRENCY_CONFLICT (expectedVersion is not the entity's version)."
    ))


@strawberry.type(description="One input field that breaks a rule, and the rule.")
class FieldError:
    field: str = strawberry.field(description=(
        "The input field's name as in the schema, e.g. `city` or `dateOfBirth`."
    ))
    message: str = strawberry.field(description=(
        "The rule it breaks, e.g. \"The City cannot be blank.\""
    ))


@strawberry.type(description=(
    "Code VALIDATION_FAILED: one or more input fields break a rule (text blank, over 200 "
    "characters or with control characters; an id outside 1..2147483647; an employee younger "
    "than 16; a negative expectedVersion). Every problem is listed at once."
))
class ValidationError(Error):
    fields: list[FieldError] = strawberry.field(description="Each field in error, with its rule.")


@strawberry.type(description=(
    "Code NOT_FOUND: no location or employee with this id exists (a terminated employee no "
    "longer does)."
))
class NotFoundError(Error):
    entity: str = strawberry.field(description="Which kind of entity: Location or Employee.")
    id: int = strawberry.field(description="The id that was not found.")


@strawberry.type(description=(
    "Code ALREADY_EXISTS: the id chosen for a new location or employee is already taken; leave "
    "`id` out to get the next free one."
))
class AlreadyExistsError(Error):
    entity: str = strawberry.field(description="Which kind of entity: Location or Employee.")
    id: int = strawberry.field(description="The id that is taken.")


@strawberry.type(description=(
    "A business rule refuses the command. Code EMPLOYEE_ALREADY_AT_LOCATION: an employee cannot "
    "be moved to the location they already work at."
))
class RuleViolationError(Error):
    pass


@strawberry.type(description=(
    "Code CONCURRENCY_CONFLICT: the mutation's expectedVersion is not the entity's version; "
    "someone changed it since you read it. Read it again and decide again. (Without "
    "expectedVersion, concurrent commands are retried by the service instead.)"
))
class ConflictError(Error):
    expected_version: int | None = strawberry.field(description="The version the mutation gave.")
    actual_version: int | None = strawberry.field(description="The entity's version now.")


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


class ValuesOfCorrectType(ValuesOfCorrectTypeRule):
    """graphql-core's rule for argument values written in the query (a Date that is no date, a
    string where an Int goes), with BAD_USER_INPUT on its errors: the value is wrong, not the
    shape of the query, as when the same value comes in a variable."""

    def report_error(self, error: GraphQLError) -> None:
        super().report_error(with_code(error, "BAD_USER_INPUT"))


class CodedRequestErrors(Executor[Any]):
    """graphql-core's executor whose request errors carry a code: with an operation to run, the
    only ones left are its variables' values failing to coerce (a bad Date, a string for an
    Int, a missing non-null variable): BAD_USER_INPUT; without one, GRAPHQL_VALIDATION_FAILED."""

    @classmethod
    def build(  # graphql-core passes these positionally
        cls, schema: GraphQLSchema, document: DocumentNode, root_value: Any = None,
        context_value: Any = None, raw_variable_values: dict[str, Any] | None = None,
        operation_name: str | None = None, *args: Any, **kwargs: Any,
    ) -> list[GraphQLError] | Executor[Any]:
        built = super().build(schema, document, root_value, context_value, raw_variable_values,
                              operation_name, *args, **kwargs)
        if isinstance(built, list):
            found = get_operation_ast(document, operation_name) is not None
            code = "BAD_USER_INPUT" if found else "GRAPHQL_VALIDATION_FAILED"
            return [with_code(error, code) for error in built]
        return built
