"""Expected command failures. Each maps one-to-one onto a GraphQL error type."""

from __future__ import annotations

from dataclasses import dataclass


class DomainError(Exception):
    """A command was refused; nothing was written."""

    code: str = "DOMAIN_ERROR"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class FieldProblem:
    field: str
    message: str


class ValidationFailed(DomainError):
    code = "VALIDATION_FAILED"

    def __init__(self, problems: list[FieldProblem]) -> None:
        super().__init__(" ".join(p.message for p in problems))
        self.problems = problems


class NotFound(DomainError):
    code = "NOT_FOUND"

    def __init__(self, entity: str, entity_id: int) -> None:
        super().__init__(f"No {entity} with this ID exists.")
        self.entity = entity
        self.entity_id = entity_id


class AlreadyExists(DomainError):
    code = "ALREADY_EXISTS"

    def __init__(self, entity: str, entity_id: int) -> None:
        article = "An" if entity[0] in "AEIOU" else "A"
        super().__init__(f"{article} {entity} with this ID already exists.")
        self.entity = entity
        self.entity_id = entity_id


class RuleViolation(DomainError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Conflict(DomainError):
    code = "CONCURRENCY_CONFLICT"

    def __init__(self, expected: int | None, actual: int | None, message: str = "") -> None:
        super().__init__(
            message or f"Expected version {expected} but the employee is at version {actual}."
        )
        self.expected = expected
        self.actual = actual
