"""A write that breaks a constraint: which one, and whose fault, in the database's own terms.

PostgreSQL names the constraint and the column (SQLSTATE 23505 unique, 23503 foreign key,
23502 not null, 23514 check); SQLite names the column in its message. The app answers 409 when
the row conflicts with one already there (unique), 422 when the request's own values are at
fault (a missing value, a reference to nothing, a failed check); the scripts print one line.
The values themselves are never repeated: they are the client's data.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass

import asyncpg
from tortoise.exceptions import BaseORMException

# SQLSTATE: (HTTP status, what happened)
KINDS = {
    "23505": (409, "a row with the same value exists already"),
    "23503": (422, "it refers to a row that does not exist"),
    "23502": (422, "a required value is missing"),
    "23514": (422, "a value breaks a check"),
}
SQLITE = {"UNIQUE": "23505", "FOREIGN KEY": "23503", "NOT NULL": "23502", "CHECK": "23514"}


@dataclass
class Violation:
    sqlstate: str
    table: str | None
    field: str | None
    constraint: str | None

    @property
    def status(self) -> int:
        return KINDS[self.sqlstate][0]

    @property
    def what(self) -> str:
        return KINDS[self.sqlstate][1]

    def body(self) -> dict[str, object]:
        """The JSON body of the app's answer: what broke, never the values."""
        body: dict[str, object] = {"detail": self.what}
        if self.field:
            body["field"] = self.field
        if self.constraint:
            body["constraint"] = self.constraint
        return body

    def line(self) -> str:
        """One line for a log or a script."""
        names = ", ".join(f"{label} {value}" for label, value in (
            ("table", self.table), ("field", self.field), ("constraint", self.constraint))
            if value)
        return f"A write was refused: {self.what} ({names})"


def violation(exc: BaseException) -> Violation | None:
    """The constraint ``exc`` (Tortoise's IntegrityError, or the driver's own) broke, if any."""
    while isinstance(exc, BaseORMException) and isinstance(exc.__cause__, Exception):
        exc = exc.__cause__
    if "contains null values" in str(exc):  # not a write: a migration adding a column (errors.py)
        return None
    if isinstance(exc, asyncpg.IntegrityConstraintViolationError) and exc.sqlstate in KINDS:
        field = getattr(exc, "column_name", None)
        key = re.match(r"Key \(([^)]+)\)=", getattr(exc, "detail", None) or "")
        return Violation(exc.sqlstate, getattr(exc, "table_name", None),
                         field or (key.group(1) if key else None),
                         getattr(exc, "constraint_name", None))
    if isinstance(exc, sqlite3.IntegrityError):
        found = re.match(r"(UNIQUE|FOREIGN KEY|NOT NULL|CHECK) constraint failed(?:: (\S+))?",
                         str(exc))
        if found:
            table, _, field = (found.group(2) or "").partition(".")
            return Violation(SQLITE[found.group(1)], table or None, field or None, None)
    return None
