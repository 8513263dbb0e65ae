"""Transactions with Tortoise ORM: a block that fails is rolled back, a block that succeeds commits.

Run it with `python transactions.py`. It works on a fresh database: it creates the table itself.
"""

import argparse
import uuid

import tortoise_neon

from tortoise.transactions import in_transaction

from main import User


async def main() -> None:
    async with tortoise_neon.connect():
        run = uuid.uuid4().hex[:8]  # tags this run's rows, so the counts below are exact
        alice, bob = f"Alice (run {run})", f"Bob (run {run})"

        # 1. The block raises after the insert: everything in it is rolled back.
        try:
            async with in_transaction():
                await User.create(name=alice)
                raise RuntimeError("payment declined")
        except RuntimeError as error:
            print(f"1. Inserted {alice!r}, then the block raised ({error}): rolled back.")

        # 2. The block completes: its insert is committed.
        async with in_transaction():
            await User.create(name=bob)
        print(f"2. Inserted {bob!r} and the block completed: committed.")

        saved = [user.name for user in await User.filter(name__in=[alice, bob])]
        print(f"Rows saved by this run: {saved.count(alice)} for {alice!r}, {saved.count(bob)} for {bob!r}.")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Roll back one transaction, commit another.")
    parser.parse_args()  # only --help: nothing to choose
    tortoise_neon.run(main())
