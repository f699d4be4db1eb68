"""The GraphQL schema: queries, mutations, caches and error masking."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import strawberry
from graphql import ASTValidationRule, DocumentNode, GraphQLError, parse, specified_rules
from graphql.validation import NoSchemaIntrospectionCustomRule, ValidationContext
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from strawberry.extensions import MaskErrors, MaxAliasesLimiter, QueryDepthLimiter
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext, validate_document
from strawberry.types import ExecutionContext
from strawberry.types.graphql import OperationType

from app.auth import ANONYMOUS, READER, WRITER, AuthError, Principal
from app.event_store.base import StoreUnavailable
from app.observability import REJECTIONS, correlation_id
from app.schema.errors import ClientError
from app.schema.inputs import build_inputs_directly
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
    """Errors not raised for the client: replaced before they reach it, and logged."""
    original = error.original_error
    if original is None or isinstance(original, GraphQLError):
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


class PerEventExecutionContext(StrawberryGraphQLCoreExecutionContext):
    """Gives each subscription event its own subfield memo.

    graphql-core 3.3 builds each event's executor as a shallow copy that shares the memo of
    collected subfields, keyed by field lists that are new for every event and kept alive by
    it: a long-lived subscription grew by 1-2 KB per event pushed (found by `bench/soak.py`).
    """

    def build_per_event_executor(self, payload: Any) -> Any:
        executor = super().build_per_event_executor(payload)
        executor._relevant_sub_fields = {}
        return executor


class PreparedDocuments:
    """Parsed and validated documents by query text, the most recently used `size` of them.

    Clients send the same few query texts again and again: each is parsed (within the token
    limit) and validated (with the depth, alias and introspection rules) once, and later
    requests start from the result. A text that does not parse is not kept: the schema parses
    it again to report the error.
    """

    def __init__(self, schema: Schema, rules: tuple[type[ASTValidationRule], ...],
                 max_tokens: int, size: int = 256) -> None:
        self._schema, self.rules, self.max_tokens, self._size = schema, rules, max_tokens, size
        self._prepared: OrderedDict[str, tuple[DocumentNode, list[GraphQLError]]] = OrderedDict()

    def get(self, query: str) -> tuple[DocumentNode, list[GraphQLError]] | None:
        prepared = self._prepared.get(query)
        if prepared is not None:
            self._prepared.move_to_end(query)
            return prepared
        try:
            document = parse(query, max_tokens=self.max_tokens)
        except GraphQLError:
            return None
        errors = validate_document(self._schema._schema, document, self.rules)
        self._prepared[query] = prepared = (document, errors)
        if len(self._prepared) > self._size:
            self._prepared.popitem(last=False)
        return prepared

    def __len__(self) -> int:
        return len(self._prepared)


class Schema(strawberry.Schema):
    documents: PreparedDocuments
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
            context.graphql_document, errors = prepared
            context.pre_execution_errors = list(errors)
        return context

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
        """
        for error in errors:
            log.info("client error: %s (%s)", error.message, (error.extensions or {}).get("code"))


class Gatekeeper(MaskErrors):
    """The one extension every operation passes: the caller's role, then error masking.

    Queries and subscriptions need the reader role, mutations the writer role. The principal
    (or why there is none) was put in the context by the view: from the Authorization header
    over HTTP, from connection_init over websockets. Nothing executes, so nothing is written,
    when this refuses. Afterwards outages get a plain code, and any other unexpected error a
    message carrying the correlation id it was logged with.
    """

    def __init__(self) -> None:
        super().__init__(should_mask_error=is_unexpected)

    def on_execute(self) -> Iterator[None]:
        context = self.execution_context.context
        error: AuthError | None = getattr(context, "auth_error", None)
        principal: Principal | None = getattr(context, "principal", ANONYMOUS)
        if error is None and principal is None:
            error = AuthError("Authentication required.")
        if error is not None:
            REJECTIONS.labels("unauthenticated").inc()
            raise ClientError(error.message, error.code)
        assert principal is not None
        mutation = self.execution_context.operation_type == OperationType.MUTATION
        needed = WRITER if mutation else READER
        if not principal.allows(needed):
            REJECTIONS.labels("forbidden").inc()
            raise ClientError(f"This operation needs the {needed} role.", "FORBIDDEN")
        yield

    def _process_result(self, result: object) -> None:
        """As the library does, without its runtime protocol check (≈ 4 % of a query's time)."""
        errors = getattr(result, "errors", None)
        if errors:
            result.errors = self._process_errors(errors)  # type: ignore[attr-defined]

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
        *specified_rules,
        *QueryDepthLimiter(max_depth=settings.max_query_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=settings.max_aliases).validation_rules,
    ]
    if not settings.introspection:
        rules.append(NoSchemaIntrospectionCustomRule)  # what DisableIntrospection adds
        rules.append(HideSuggestions)
    schema = Schema(
        query=Query, mutation=Mutation, subscription=Subscription, extensions=[Gatekeeper],
        execution_context_class=PerEventExecutionContext,
    )
    schema.documents = PreparedDocuments(schema, tuple(rules), settings.max_query_tokens)
    schema.hide_suggestions = not settings.introspection
    build_inputs_directly(schema)
    return schema
