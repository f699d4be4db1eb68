"""Field rules shared by every command: the original validators' messages, plus hard bounds."""

from __future__ import annotations

import datetime as dt
import re

from app.domain.errors import FieldProblem, ValidationFailed

MAX_TEXT = 200
MAX_ID = 2**31 - 1
MINIMUM_AGE_YEARS = 16
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
"""Unicode's control characters (category Cc): exactly these two ranges."""


class FieldChecker:
    """Collects every problem of one command so the client sees them all at once."""

    def __init__(self) -> None:
        self.problems: list[FieldProblem] = []

    def text(self, field: str, label: str, value: str) -> None:
        if not value.strip():
            self.problems.append(FieldProblem(field, f"The {label} cannot be blank."))
        elif len(value) > MAX_TEXT:
            self.problems.append(
                FieldProblem(field, f"The {label} must be at most {MAX_TEXT} characters.")
            )
        elif CONTROL.search(value):
            self.problems.append(
                FieldProblem(field, f"The {label} cannot contain control characters.")
            )

    def identifier(self, field: str, label: str, value: int | None) -> None:
        if value is not None and not 1 <= value <= MAX_ID:
            self.problems.append(
                FieldProblem(field, f"The {label} must be between 1 and {MAX_ID}.")
            )

    def adult(self, field: str, date_of_birth: dt.date, today: dt.date) -> None:
        if date_of_birth > sixteen_years_before(today):
            self.problems.append(
                FieldProblem(field, "Employees must be 16 years old or older.")
            )

    def version(self, field: str, value: int | None) -> None:
        if value is not None and value < 0:
            self.problems.append(FieldProblem(field, "The Expected Version cannot be negative."))

    def raise_if_any(self) -> None:
        if self.problems:
            raise ValidationFailed(self.problems)


def sixteen_years_before(today: dt.date) -> dt.date:
    """The latest date of birth allowed today (29 February falls back to the 28th)."""
    year = today.year - MINIMUM_AGE_YEARS
    try:
        return today.replace(year=year)
    except ValueError:
        return today.replace(year=year, day=28)
