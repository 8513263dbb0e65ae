"""The quickstart's User model behind a small FastAPI app, on the same DATABASE_URL.

Run it from the repository root: ``uvicorn app:app``. DATABASE_URL comes from .env, as for
main.py, and the models from ``MODELS`` in settings.py, as for the Tortoise CLI.

The schema: this app does not create tables. An app's models change, and only migrations can
follow them (``tortoise makemigrations`` then ``tortoise migrate``, see the README), so at
start-up it only checks that every model's table and columns exist, and says how to fix it if
not. A database error at start-up (a wrong DATABASE_URL, a database that is down, a missing
table) is one ``Error:`` line, as in the scripts.
"""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated

import database
from fastapi import FastAPI, HTTPException, Query
from pydantic import BaseModel, ConfigDict, field_validator
from tortoise import connections
from tortoise.contrib.fastapi import RegisterTortoise

from main import User


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Connect with the database package's config, check the schema, close on shutdown.
    async with RegisterTortoise(app, config=database.tortoise_config()):
        await database.check_schema()
        yield


app = FastAPI(title="Neon + Tortoise ORM quickstart", lifespan=lifespan)
app.add_middleware(database.OneLineStartupErrors)


class NewUser(BaseModel):
    name: str

    @field_validator("name")
    @classmethod
    def one_to_fifty_characters(cls, value: str) -> str:
        value = value.strip()
        if not 1 <= len(value) <= 50:
            raise ValueError("the name must be 1 to 50 characters")
        return value


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    created_at: datetime


@app.get("/users")
async def list_users(limit: Annotated[int, Query(ge=1, le=100)] = 10) -> list[UserOut]:
    """The newest users first."""
    users = await User.all().order_by("-id").limit(limit)
    return [UserOut.model_validate(user) for user in users]


@app.post("/users", status_code=201)
async def create_user(new: NewUser) -> UserOut:
    return UserOut.model_validate(await User.create(name=new.name))


@app.get("/health")
async def health() -> dict[str, str]:
    """OK only if the database answers. Why not goes to the server's log, not to the client:
    the line names the host and the user."""
    try:
        await connections.get("default").execute_query("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any failure here means "not healthy"
        logging.getLogger("uvicorn.error").error("Error: %s", database.explain_error(exc))
        raise HTTPException(503, detail="the database is not answering") from None
    return {"status": "ok"}
