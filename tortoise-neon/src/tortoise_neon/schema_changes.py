"""Migration operations for the schema changes Tortoise's makemigrations does not see.

``rename_table(model, old, new)``: after changing a model's ``Meta.table``. Tortoise 1.1.9
carries ``table`` as an option it does not compare, so ``makemigrations`` finds no change and the
code then looks for a table that is not there. The operations rename the table in the database
(``ALTER TABLE ... RENAME``, undone by the reverse rename) and record the new name in the
migrations' state, so that the next generated migration (an ``AddField``, say) targets it.
docs/schema-changes.md shows the migration to write.
"""

from __future__ import annotations

from tortoise_neon.schema import quote_ident

from tortoise.migrations import operations as ops


def rename_table(model: str, old: str, new: str) -> list[ops.Operation]:
    """The operations of a migration that renames ``model``'s table from ``old`` to ``new``."""
    quoted_old, quoted_new = quote_ident(old), quote_ident(new)  # any name, even with a "
    return [
        ops.RunSQL(f"ALTER TABLE {quoted_old} RENAME TO {quoted_new}",
                   reverse_sql=f"ALTER TABLE {quoted_new} RENAME TO {quoted_old}"),
        ops.AlterModelOptions(name=model, options={"table": new}),
    ]
