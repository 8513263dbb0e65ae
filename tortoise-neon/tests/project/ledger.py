"""The library's transaction script: one block rolled back, one committed.

    python ledger.py
"""

import argparse
import uuid

import tortoise_neon

from members import Member
from tortoise.transactions import in_transaction


async def both() -> None:
    async with tortoise_neon.connect():
        tag = uuid.uuid4().hex[:8]
        try:
            async with in_transaction():
                await Member.create(name=f"undone {tag}")
                raise RuntimeError("undo")
        except RuntimeError:
            print("rolled back")
        async with in_transaction():
            await Member.create(name=f"kept {tag}")
        print("committed")
        kept = await Member.filter(name__endswith=tag).values_list("name", flat=True)
        print(f"saved: {sorted(kept)}")


if __name__ == "__main__":
    argparse.ArgumentParser(description="Roll back one block, commit another.").parse_args()
    tortoise_neon.run(both())
