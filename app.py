"""The quickstart's User model behind a small FastAPI app, on the same DATABASE_URL.

Run it from the repository root: ``uvicorn app:app``. DATABASE_URL comes from .env, as for
main.py, and the models from ``MODELS`` in settings.py, as for the Tortoise CLI.

The schema: this app does not create tables. An app's models change, and only migrations can
follow them (``tortoise makemigrations`` then ``tortoise migrate``, see the README), so at
start-up it only checks that every model's table and columns exist, and says how to fix it if
not. A database error at start-up (a wrong DATABASE_URL, a database that is down, a missing
table) is one ``Error:`` line, as in the scripts.

When the database is down or its compute restarts, the tortoise_neon library retries what is safe
(a read, on a new connection) and the app answers 503 with ``Retry-After`` instead of a 500
(``tortoise_neon.answer_database_errors``): a POST whose connection was lost after it was sent says
``"may_have_been_saved": true``. ``/health`` is for the platform (it never wakes the database);
``/health/db`` checks the database.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated

import tortoise_neon

from fastapi import FastAPI, Query
from pydantic import BaseModel, ConfigDict, field_validator
from tortoise import connections
from tortoise.contrib.fastapi import RegisterTortoise

from main import User


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Connect with the library's config, check the schema, close on shutdown.
    async with RegisterTortoise(app, config=tortoise_neon.tortoise_config()):
        await tortoise_neon.check_schema()
        yield


app = FastAPI(title="Neon + Tortoise ORM quickstart", lifespan=lifespan)
app.add_middleware(tortoise_neon.OneLineStartupErrors)
tortoise_neon.answer_database_errors(app)


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
    """The app is up. No query: a platform polling this lets Neon scale the compute to zero."""
    return {"status": "ok"}


@app.get("/health/db")
async def database_health() -> dict[str, str]:
    """OK when the database answers; 503 when not (why goes to the server's log, not to the
    client: the line names the host and the user)."""
    await connections.get("default").execute_query("SELECT 1")
    return {"status": "ok"}
