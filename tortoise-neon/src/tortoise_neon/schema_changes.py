"""Migration operations for the schema changes Tortoise's makemigrations does not see.

``rename_table(model, old, new)``: after changing a model's ``Meta.table``. Tortoise 1.1.9
carries ``table`` as an option it does not compare, so ``makemigrations`` finds no change and the
code then looks for a table that is not there. The operations rename the table in the database
(``ALTER TABLE ... RENAME``, undone by the reverse rename) and record the new name in the
migrations' state (the table only: the model's other options stay as they were), so that the next
``makemigrations`` finds no change and the next generated migration (an ``AddField``, say)
targets it. docs/schema-changes.md shows the migration to write.
"""

from __future__ import annotations

from tortoise_neon.schema import quote_ident

from tortoise.migrations import operations as ops
from tortoise.migrations.schema_generator.state import State


class RecordTable(ops.AlterModelOptions):
    """The model's table in the migrations' state, and nothing else in the database.

    Tortoise's own ``AlterModelOptions(options={"table": ...})`` drops the options it is not
    given (``pk_attr``, say), so that the next ``makemigrations`` writes them back, in a stray
    ``AlterModelOptions``; this one leaves them as they were.
    """

    def __init__(self, name: str, table: str) -> None:
        super().__init__(name=name, options={"table": table})

    def describe(self) -> str:
        return f"Record table {self.options['table']!r} for {self.name}"

    def state_forward(self, app_label: str, state: State) -> None:
        model_state = self.get_model_state(state, app_label, self.name)
        model_state.options["table"] = model_state.table = self.options["table"]
        state.reload_model(app_label, self.name)


def rename_table(model: str, old: str, new: str) -> list[ops.Operation]:
    """The operations of a migration that renames ``model``'s table from ``old`` to ``new``."""
    quoted_old, quoted_new = quote_ident(old), quote_ident(new)  # any name, even with a "
    return [
        ops.RunSQL(f"ALTER TABLE {quoted_old} RENAME TO {quoted_new}",
                   reverse_sql=f"ALTER TABLE {quoted_new} RENAME TO {quoted_old}"),
        RecordTable(model, new),
    ]
