"""A write that breaks a constraint: which one, and whose fault, in the database's own terms.

PostgreSQL names the constraint and the column (SQLSTATE 23505 unique, 23503 foreign key,
23502 not null, 23514 check); SQLite names the column in its message. The app answers 409 when
the row conflicts with one already there (unique), 422 when the request's own values are at
fault (a missing value, a reference to nothing, a failed check); the scripts print one line.
The values themselves are never repeated: they are the client's data. The app's answers name
the field; the constraint too only when ``answer_503_when_down(app, show_constraint_names=True)``
asks (its name names the table). A value a model's field refused (Tortoise's ValidationError,
whose text holds the value) becomes the field and a kind of failure (``refusal``).
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

    def body(self, show_constraint: bool = False) -> dict[str, object]:
        """The JSON body of the app's answer: what broke, never the values; the constraint's
        name only with ``show_constraint`` (it names the table, for anyone who asks)."""
        body: dict[str, object] = {"detail": self.what}
        if self.field:
            body["field"] = self.field
        if self.constraint and show_constraint:
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


# A model field's name (Tortoise's ValidationError reads ``<field>: <why>``).
FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}", re.ASCII)
# Tortoise's validator texts that hold no value of the client's: kept as they are.
VALUE_FREE = re.compile(r"Value must not be None|Value must be a numeric value and is required|"
                        r"Value should be (?:greater|less) or equal to [-+0-9.eE]{1,40}", re.ASCII)


def refusal(exc: BaseException) -> tuple[str | None, str]:
    """The field and the kind of failure of a value a model refused (Tortoise's
    ValidationError), never the value: Tortoise's text repeats it (``Length of '<value>' ...``)."""
    text = str(exc)
    field, colon, why = text.partition(": ")
    if not colon or not FIELD_NAME.fullmatch(field):
        field, why = "", text
    return field or None, _kind(why)


def _kind(why: str) -> str:
    length = re.search(r"' [0-9]+ ([<>]) ([0-9]+)\Z", why)
    if why.startswith("Length of '") and length:
        more = "longer" if length.group(1) == ">" else "shorter"
        return f"the value is {more} than {length.group(2)} characters"
    if why.startswith("Value '") and "' does not match regex '" in why:
        return "the value does not match the field's pattern"
    address = re.search(r"' is not a valid (IPv4|IPv6|IPv4 or IPv6) address\.\Z", why)
    if why.startswith("'") and address:
        return f"the value is not a valid {address.group(1)} address"
    if VALUE_FREE.fullmatch(why):
        return why
    return "the model refused the value"


def printable(text: str, limit: int = 200) -> str:
    """``text`` for one log line: newlines, other control and unprintable characters, and
    backslashes escaped as ``repr`` does (``\\n``, ``\\x1b``), cut after ``limit`` characters."""
    escaped = "".join(c if c.isprintable() and c != "\\" else repr(c)[1:-1]
                      for c in text[:limit])
    return escaped + ("..." if len(text) > limit else "")
