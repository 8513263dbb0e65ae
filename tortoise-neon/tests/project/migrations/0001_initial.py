from tortoise import fields, migrations
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    initial = True

    operations = [
        ops.CreateModel(
            name="Member",
            fields=[
                ("id", fields.IntField(generated=True, primary_key=True, unique=True,
                                       db_index=True)),
                ("name", fields.CharField(max_length=50)),
                ("handle", fields.CharField(max_length=30, null=True, unique=True)),
                ("joined_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={"table": "library_members", "app": "models", "pk_attr": "id"},
            bases=["Model"],
        ),
    ]
