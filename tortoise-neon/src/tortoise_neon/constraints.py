"""A write a constraint or a model refused: which field, whose fault, never the client's values
(the app's 409/422 bodies: docs/app-on-neon.md)."""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass

from tortoise_neon.error_chain import driver_error

import asyncpg
from tortoise import Tortoise

# SQLSTATE: (HTTP status, what happened, the item's "type")
KINDS = {
    "23505": (409, "a row with the same value exists already", "unique"),
    "23503": (422, "it refers to a row that does not exist", "foreign_key"),
    "23502": (422, "a required value is missing", "missing"),  # pydantic's type for the same
    "23514": (422, "a value breaks a check", "check"),
}
SQLITE = {"UNIQUE": "23505", "FOREIGN KEY": "23503", "NOT NULL": "23502", "CHECK": "23514"}
# A model field's name (Tortoise's ValidationError reads ``<field>: <why>``).
FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}", re.ASCII)
# Tortoise's validator texts that hold no value of the client's: kept as they are.
VALUE_FREE = re.compile(r"Value must not be None|Value must be a numeric value and is required|"
                        r"Value should be (?:greater|less) or equal to [-+0-9.eE]{1,40}", re.ASCII)
ADDRESS_TYPES = {"IPv4": "ip_v4_address", "IPv6": "ip_v6_address",
                 "IPv4 or IPv6": "ip_any_address"}  # pydantic's types for the same failures


@dataclass(frozen=True)
class Violation:
    status: int
    what: str
    type: str
    table: str | None
    field: str | None
    constraint: str | None

    def body(self, show_constraint: bool = False) -> dict[str, object]:
        """The app's answer; the constraint's name (it names the table) only when asked."""
        extra = {"constraint": self.constraint} if self.constraint and show_constraint else {}
        return problem(self.field, self.what, self.type, **extra)

    def line(self) -> str:
        """One line for a log or a script."""
        names = ", ".join(f"{label} {value}" for label, value in (
            ("table", self.table), ("field", self.field), ("constraint", self.constraint))
            if value)
        return f"A write was refused: {self.what} ({names})"


def violation(exc: BaseException) -> Violation | None:
    """The constraint ``exc`` (Tortoise's IntegrityError, or the driver's own) broke, if any."""
    exc = driver_error(exc)
    if "contains null values" in str(exc):  # not a write: a migration adding a column (errors.py)
        return None
    if isinstance(exc, asyncpg.IntegrityConstraintViolationError) and exc.sqlstate in KINDS:
        table, constraint = getattr(exc, "table_name", None), getattr(exc, "constraint_name", None)
        field = getattr(exc, "column_name", None)
        key = re.match(r"Key \(([^)]+)\)=", getattr(exc, "detail", None) or "")
        return Violation(*KINDS[exc.sqlstate], table,
                         field or (key.group(1) if key else None) or _checked(table, constraint),
                         constraint)
    if isinstance(exc, sqlite3.IntegrityError):
        found = re.match(r"(UNIQUE|FOREIGN KEY|NOT NULL|CHECK) constraint failed(?:: (\S+))?",
                         str(exc))
        if found:
            table, _, field = (found.group(2) or "").partition(".")
            return Violation(*KINDS[SQLITE[found.group(1)]], table or None, field or None, None)
    return None


def _checked(table: str | None, constraint: str | None) -> str | None:
    """The column a CHECK named by PostgreSQL's default rule (``<table>_<column>_check``)
    checks, when a model Tortoise knows has it: PostgreSQL sends no column for a CHECK."""
    if not table or not constraint:
        return None
    found = re.fullmatch(re.escape(table) + r"_(\w+)_check[0-9]*", constraint)
    if not found:
        return None
    apps = Tortoise.apps  # None without a Tortoise context: no model to ask
    for model in apps.get_models_iterable() if apps is not None else ():
        meta = model._meta
        if meta.db_table == table and found.group(1) in meta.fields_db_projection.values():
            return found.group(1)
    return None


def problem(field: str | None, msg: str, kind: str, **extra: object) -> dict[str, object]:
    """A 409/422 body in FastAPI's 422 shape: ``loc`` the field under ``"body"``."""
    loc = ["body", field] if field else ["body"]
    return {"detail": [{"loc": loc, "msg": msg, "type": kind, **extra}]}


def refusal(exc: BaseException) -> tuple[str | None, str, str]:
    """The field, the kind of failure and pydantic's type for it, of a value a model refused
    (Tortoise's ValidationError), never the value its text repeats."""
    text = str(exc)
    field, colon, why = text.partition(": ")
    if not colon or not FIELD_NAME.fullmatch(field):
        field, why = "", text
    return (field or None, *_kind(why))


def _kind(why: str) -> tuple[str, str]:
    length = re.search(r"' [0-9]+ ([<>]) ([0-9]+)\Z", why)
    if why.startswith("Length of '") and length:
        more = "longer" if length.group(1) == ">" else "shorter"
        return (f"the value is {more} than {length.group(2)} characters",
                f"string_too_{'long' if more == 'longer' else 'short'}")
    if why.startswith("Value '") and "' does not match regex '" in why:
        return "the value does not match the field's pattern", "string_pattern_mismatch"
    address = re.search(r"' is not a valid (IPv4|IPv6|IPv4 or IPv6) address\.\Z", why)
    if why.startswith("'") and address:
        return (f"the value is not a valid {address.group(1)} address",
                ADDRESS_TYPES[address.group(1)])
    if not VALUE_FREE.fullmatch(why):
        return "the model refused the value", "value_error"
    if why == "Value must not be None":
        return why, "missing"
    if why.startswith("Value should be"):
        return why, "greater_than_equal" if " greater " in why else "less_than_equal"
    return why, "value_error"


def printable(text: str, limit: int = 200) -> str:
    """``text`` for one log line: control characters and backslashes escaped as ``repr`` does,
    cut after ``limit`` characters."""
    escaped = "".join(c if c.isprintable() and c != "\\" else repr(c)[1:-1]
                      for c in text[:limit])
    return escaped + ("..." if len(text) > limit else "")
