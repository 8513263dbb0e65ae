"""A test for the app's endpoints: copy it for yours (``client`` talks to app.py in-process)."""

import httpx
import pytest

pytestmark = pytest.mark.anyio


async def test_create_a_user_then_list_it(client: httpx.AsyncClient) -> None:
    created = await client.post("/users", json={"name": "  Grace  "})
    assert created.status_code == 201
    assert created.json()["name"] == "Grace"

    listed = await client.get("/users", params={"limit": 1})
    assert listed.status_code == 200
    assert [user["name"] for user in listed.json()] == ["Grace"]


async def test_a_name_longer_than_50_characters_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.post("/users", json={"name": "x" * 51})
    assert response.status_code == 422
    assert (await client.get("/users")).json() == []
