"""The GraphQL schema: queries, mutations, caches and error masking."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import strawberry
from graphql import (
    ASTValidationRule,
    DocumentNode,
    FragmentDefinitionNode,
    GraphQLError,
    ValuesOfCorrectTypeRule,
    get_operation_ast,
    parse,
    specified_rules,
)
from graphql.validation import NoSchemaIntrospectionCustomRule, ValidationContext
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from strawberry.extensions import MaskErrors
from strawberry.schema.exceptions import InvalidOperationTypeError
from strawberry.schema.schema import DEFAULT_ALLOWED_OPERATION_TYPES, validate_document
from strawberry.types import ExecutionContext, ExecutionResult
from strawberry.types.graphql import OperationType

from app.auth import ANONYMOUS, EXPIRED, READER, WRITER, AuthError, Principal
from app.event_store.base import StoreUnavailable
from app.observability import REJECTIONS, correlation_id
from app.schema.cost import CostModel
from app.schema.errors import (
    OPERATION_REFUSALS,
    ClientError,
    ValuesOfCorrectType,
    with_code,
    with_refusal_code,
)
from app.schema.execution import with_deadline
from app.schema.inputs import build_inputs_directly
from app.schema.limits import shape_limits_rule
from app.schema.mutations import Mutation
from app.schema.queries import Query
from app.schema.subscriptions import Subscription
from app.settings import Settings

log = logging.getLogger(__name__)


# A backing server that cannot be reached is an outage to report plainly, not a bug to hide.
OUTAGES: tuple[tuple[type[BaseException], str, str], ...] = (
    (RedisConnectionError, "READ_MODEL_UNAVAILABLE", "The read model is unavailable; try again."),
    (RedisTimeoutError, "READ_MODEL_UNAVAILABLE", "The read model is unavailable; try again."),
    (StoreUnavailable, "STORE_UNAVAILABLE", "The event store is unavailable; try again."),
)


def is_unexpected(error: GraphQLError) -> bool:
    """Errors not raised for the client: replaced before they reach it, and logged.

    A GraphQL error is the client's when it carries a code (ours all do, and so do variables
    that do not coerce); one without is graphql-core finding fault with what a resolver
    returned (a list that is not one, a union member of no known type): a bug, like any other
    exception."""
    original = error.original_error
    if original is None or isinstance(original, OPERATION_REFUSALS):
        return False
    if isinstance(original, GraphQLError) and (error.extensions or {}).get("code"):
        return False
    if any(isinstance(original, kind) for kind, _, _ in OUTAGES):
        log.warning("%s at %s: %s", type(original).__name__, error.path, original)
    else:
        log.error("unexpected error in %s", error.path, exc_info=original)
    return True


class HideSuggestions(ASTValidationRule):
    """With introspection off, errors name nothing of the schema that the query did not:
    graphql-core's "Did you mean …?" suggestions would list the fields, arguments and types
    close to a guess. Its validation can leave them out (`hide_suggestions`), which strawberry
    does not pass on; this rule sets it on the validation's context."""

    def __init__(self, context: ValidationContext) -> None:
        super().__init__(context)
        context._hide_suggestions = True


@dataclass(slots=True)
class Prepared:
    """A query text parsed and validated, and its cost per operation once known."""

    document: DocumentNode
    errors: list[GraphQLError]
    costs: dict[str | None, int] = field(default_factory=dict)
    """By operation name; only figures that no variable changes are kept."""


class PreparedDocuments:
    """Parsed and validated documents by query text, the most recently used `size` of them.

    Clients send the same few query texts again and again: each is parsed (within the token
    limit) and validated (with the depth, alias and introspection rules) once, and later
    requests start from the result; its cost (app/schema/cost.py) is worked out once too,
    unless a variable changes it. A text that does not parse is not kept: the schema parses it
    again to report the error.
    """

    def __init__(self, schema: Schema, rules: tuple[type[ASTValidationRule], ...],
                 max_tokens: int, size: int = 256) -> None:
        self._schema, self.rules, self.max_tokens, self._size = schema, rules, max_tokens, size
        self._prepared: OrderedDict[str, Prepared] = OrderedDict()

    def get(self, query: str) -> Prepared | None:
        prepared = self._prepared.get(query)
        if prepared is not None:
            self._prepared.move_to_end(query)
            return prepared
        try:
            document = parse(query, max_tokens=self.max_tokens)
        except GraphQLError:
            return None
        errors = [with_code(error, "GRAPHQL_VALIDATION_FAILED")
                  for error in validate_document(self._schema._schema, document, self.rules)]
        self._prepared[query] = prepared = Prepared(document, errors)
        if len(self._prepared) > self._size:
            self._prepared.popitem(last=False)
        return prepared

    def cost(self, query: str, document: DocumentNode, operation_name: str | None,
             variables: dict[str, Any] | None) -> int:
        """The estimated cost of the operation `operation_name` of `query` (parsed into
        `document`) with these variables."""
        prepared = self._prepared.get(query)
        if prepared is not None and (known := prepared.costs.get(operation_name)) is not None:
            return known
        operation = get_operation_ast(document, operation_name)
        if operation is None:  # no such operation: execution reports it
            return 0
        fragments = {
            d.name.value: d for d in document.definitions
            if isinstance(d, FragmentDefinitionNode)
        }
        estimate = self._schema.cost_model.estimate(operation, fragments, variables)
        if prepared is not None and not estimate.uses_variables:
            prepared.costs[operation_name] = estimate.cost
        return estimate.cost

    def __len__(self) -> int:
        return len(self._prepared)


class Schema(strawberry.Schema):
    documents: PreparedDocuments
    cost_model: CostModel
    max_query_cost: int
    """0: no limit."""
    hide_suggestions = False
    """Also leave suggestions out of the errors of execution (a variable's misspelt field)."""

    def _create_execution_context(self, *args: Any, **kwargs: Any) -> ExecutionContext:
        """Every operation starts from its prepared document; one that does not parse goes
        the library's way, with the same limits, to be reported."""
        context = super()._create_execution_context(*args, **kwargs)
        prepared = self.documents.get(context.query) if context.query else None
        if prepared is None:
            context.parse_options["max_tokens"] = self.documents.max_tokens
            context.validation_rules = self.documents.rules
        else:
            context.graphql_document = prepared.document
            context.pre_execution_errors = list(prepared.errors)
        return context

    async def execute(  # the library's signature
        self, query: str | None, variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None, root_value: Any | None = None,
        operation_name: str | None = None,
        allowed_operation_types: Iterable[OperationType] | None = None,
        operation_extensions: dict[str, Any] | None = None,
    ) -> ExecutionResult:
        """Runs a query or a mutation, and refuses a subscription with a typed error.

        A subscription streams over a websocket. The library would let one through by HTTP
        (for a streaming transport this service does not offer) into graphql-core's
        `execute`, which cannot run it: its stream came back as a null in a non-null field,
        an internal error with a traceback.
        """
        allowed = set(DEFAULT_ALLOWED_OPERATION_TYPES if allowed_operation_types is None
                      else allowed_operation_types)
        allowed.discard(OperationType.SUBSCRIPTION)
        try:
            return await super().execute(
                query, variable_values, context_value, root_value, operation_name, allowed,
                operation_extensions,
            )
        except InvalidOperationTypeError as error:
            if error.operation_type is not OperationType.SUBSCRIPTION:
                raise
        refusal = ClientError(
            "Subscriptions are served over a websocket (graphql-transport-ws or graphql-ws), "
            "not over HTTP.", "GRAPHQL_VALIDATION_FAILED",
        )
        self.process_errors([refusal])
        return ExecutionResult(data=None, errors=[refusal])

    def _get_custom_context_kwargs(
        self, operation_extensions: dict[str, Any] | None = None, *, sync: bool = False
    ) -> dict[str, Any]:
        """What strawberry passes to graphql-core's execute and subscribe, and ours."""
        kwargs = super()._get_custom_context_kwargs(operation_extensions, sync=sync)
        if self.hide_suggestions:
            kwargs["hide_suggestions"] = True
        return kwargs

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        """Client errors are the client's business: no tracebacks in the operator's log.

        Unexpected errors were already logged, with their traceback, when they were masked.
        Only our own messages are logged: graphql-core's quote the request's values they refuse
        (a variable's whole input, a name typed where a string belongs), and those can be
        personal data; of those, the code and the place in the document.
        """
        for error in errors:
            code = (error.extensions or {}).get("code")
            ours = isinstance(error, ClientError) or isinstance(error.original_error, ClientError)
            if ours:
                log.info("client error: %s (%s)", error.message, code)
            else:
                places = [f"{place.line}:{place.column}" for place in error.locations or ()]
                log.info("client error: %s at %s", code, ", ".join(places) or "the request")


class Gatekeeper(MaskErrors):
    """The one extension every operation passes: the caller's role, the operation's cost, then
    error masking.

    Queries and subscriptions need the reader role, mutations the writer role. The principal
    (or why there is none) was put in the context by the view: from the Authorization header
    over HTTP, from connection_init over websockets (read as it is when each operation starts:
    its token may have expired since). Nothing executes, so nothing is written, when this
    refuses. Afterwards outages get a plain code, and any other unexpected error a message
    carrying the correlation id it was logged with.
    """

    def __init__(self) -> None:
        super().__init__(should_mask_error=is_unexpected)

    def on_execute(self) -> Iterator[None]:
        context = self.execution_context.context
        error: AuthError | None = getattr(context, "auth_error", None)
        principal: Principal | None = getattr(context, "principal", ANONYMOUS)
        if error is None and principal is None:
            error = AuthError("Authentication required.")
        if error is None and principal is not None and principal.expired(time.time()):
            error = AuthError(EXPIRED)
        if error is not None:
            REJECTIONS.labels("unauthenticated").inc()
            raise ClientError(error.message, error.code)
        assert principal is not None
        mutation = self.execution_context.operation_type == OperationType.MUTATION
        needed = WRITER if mutation else READER
        if not principal.allows(needed):
            REJECTIONS.labels("forbidden").inc()
            raise ClientError(f"This operation needs the {needed} role.", "FORBIDDEN")
        self._check_cost()
        yield

    def _check_cost(self) -> None:
        """Refuse an operation whose estimated cost is over the limit, before it executes;
        report the figure in the response's extensions when the request asks for it
        (`"extensions": {"cost": true}`)."""
        execution = self.execution_context
        schema = execution.schema
        assert isinstance(schema, Schema) and execution.query is not None
        assert execution.graphql_document is not None
        cost = schema.documents.cost(
            execution.query, execution.graphql_document, execution.operation_name,
            execution.variables,
        )
        limit = schema.max_query_cost
        if limit and cost > limit:
            REJECTIONS.labels("cost").inc()
            raise ClientError(
                f"This operation's estimated cost is {cost}, over the limit of {limit}: ask for "
                "smaller pages, fewer nested lists or fewer aliases.",
                "GRAPHQL_VALIDATION_FAILED", cost=cost, maxCost=limit,
            )
        asked = execution.operation_extensions
        if asked and asked.get("cost"):
            execution.extensions_results["cost"] = {"estimate": cost, "limit": limit}

    def _process_result(self, result: object) -> None:
        """As the library does, without its runtime protocol check (≈ 4 % of a query's time),
        and with the code of a refusal before execution on each such error."""
        errors = getattr(result, "errors", None)
        if errors:
            processed = self._process_errors(errors)
            result.errors = [with_refusal_code(e) for e in processed]  # type: ignore[attr-defined]

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        request_id = correlation_id.get() or "unknown"
        message = f"Internal server error (correlation id {request_id})."
        code = "INTERNAL_SERVER_ERROR"
        for kind, outage_code, outage_message in OUTAGES:
            if isinstance(error.original_error, kind):
                code, message = outage_code, outage_message
        return GraphQLError(
            message=message,
            nodes=error.nodes, source=error.source, positions=error.positions, path=error.path,
            extensions={"code": code, "correlationId": request_id},
        )


def build_schema(settings: Settings | None = None) -> Schema:
    settings = settings or Settings()
    rules: list[type[ASTValidationRule]] = [
        ValuesOfCorrectType if rule is ValuesOfCorrectTypeRule else rule
        for rule in specified_rules
    ]
    rules.append(shape_limits_rule(settings.max_query_depth, settings.max_aliases))
    if not settings.introspection:
        rules.append(NoSchemaIntrospectionCustomRule)  # what DisableIntrospection adds
        rules.append(HideSuggestions)
    schema = Schema(
        query=Query, mutation=Mutation, subscription=Subscription, extensions=[Gatekeeper],
        execution_context_class=with_deadline(settings.request_timeout_seconds),
    )
    schema.documents = PreparedDocuments(schema, tuple(rules), settings.max_query_tokens)
    schema.cost_model = CostModel(schema._schema, settings.max_page_size)
    schema.max_query_cost = settings.max_query_cost
    schema.hide_suggestions = not settings.introspection
    build_inputs_directly(schema)
    return schema
