"""The library's test script: add a member, print the count and the newest, as a user's script.

    python members.py [--name NAME] [--handle HANDLE]
"""

import argparse

import tortoise_neon

from tortoise import fields
from tortoise.models import Model

TABLE = "library_members"


class Member(Model):
    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=50)
    handle = fields.CharField(max_length=30, unique=True, null=True)  # a unique constraint
    joined_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = TABLE


async def add(name: str, handle: str | None) -> None:
    async with tortoise_neon.connect():
        member = await Member.create(name=name, handle=handle)
        print(f"Added member #{member.id}: {member.name}")
        newest = [m.name for m in await Member.all().order_by("-id").limit(10)]
        print(f"{await Member.all().count()} members; newest: {', '.join(newest)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Add a member.")
    parser.add_argument("--name", default="Member")
    parser.add_argument("--handle")
    arguments = parser.parse_args()
    tortoise_neon.run(add(arguments.name, arguments.handle))
