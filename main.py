"""Neon + Tortoise ORM quickstart: create a table, insert a user, list the newest users.

Run it with `python main.py` (or `python main.py --name Ada`). DATABASE_URL comes from .env;
the tortoise_neon library turns it into Tortoise's settings and handles what can go wrong.
"""

import argparse

import tortoise_neon

from tortoise import fields
from tortoise.expressions import RawSQL
from tortoise.models import Model


class User(Model):
    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=50)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "demo_users"

    def __str__(self) -> str:
        return self.name


def user_name(value: str) -> str:
    """The --name argument: 1 to 50 characters, like the name field."""
    if not 1 <= len(value.strip()) <= 50:
        raise argparse.ArgumentTypeError("the name must be 1 to 50 characters")
    return value.strip()


async def main(name: str) -> None:
    # Connect, create the table if needed; connections are closed when the block ends.
    async with tortoise_neon.connect():
        user = await User.create(name=name)
        print(f"Inserted user #{user.id}: {user}")

        # The total count and the newest 10 users, in one query.
        newest = await (
            User.annotate(total=RawSQL("(SELECT count(*) FROM demo_users)"))
            .order_by("-id")
            .limit(10)
            .values("id", "name", "created_at", "total")
        )
        total = newest[0]["total"]
        print(f"{total} {'user' if total == 1 else 'users'} in total; newest {len(newest)}:")
        for row in newest:
            print(f"  #{row['id']} {row['name']} (added {row['created_at']:%Y-%m-%d %H:%M:%S} UTC)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Insert a user into Neon and list the newest users.")
    parser.add_argument("--name", type=user_name, default="Neon User", help='default: "Neon User"')
    tortoise_neon.run(main(parser.parse_args().name))
