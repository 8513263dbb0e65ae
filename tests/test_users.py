"""A test for a model: copy it for yours (the ``db`` fixture gives it a fresh database)."""

import pytest

from main import User

pytestmark = pytest.mark.anyio


async def test_users_are_listed_newest_first(db: None) -> None:
    await User.create(name="Ada")
    await User.create(name="Grace")

    newest = await User.all().order_by("-id")

    assert [user.name for user in newest] == ["Grace", "Ada"]
    assert all(user.created_at is not None for user in newest)
