"""``rename_table``: the migration after a model's ``Meta.table`` changed, which Tortoise's
``makemigrations`` does not see (docs/schema-changes.md)."""

from __future__ import annotations

from tortoise_neon.migrate import quote_ident

from tortoise.migrations import operations as ops
from tortoise.migrations.schema_generator.state import State


class RecordTable(ops.AlterModelOptions):
    """The model's new table in the migrations' state, its other options kept (Tortoise's own
    ``AlterModelOptions`` drops those it is not given)."""

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
    quoted_old, quoted_new = quote_ident(old), quote_ident(new)
    return [
        ops.RunSQL(f"ALTER TABLE {quoted_old} RENAME TO {quoted_new}",
                   reverse_sql=f"ALTER TABLE {quoted_new} RENAME TO {quoted_old}"),
        RecordTable(model, new),
    ]
