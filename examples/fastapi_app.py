"""The quickstart's User model behind a small FastAPI app, on the same DATABASE_URL.

Run it from the repository root: ``uvicorn examples.fastapi_app:app``. DATABASE_URL comes from
.env, as for main.py, and database.py turns it into Tortoise's config.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated

from fastapi import FastAPI, HTTPException, Query
from pydantic import BaseModel, ConfigDict, field_validator
from tortoise import connections
from tortoise.contrib.fastapi import RegisterTortoise

import database
from main import User


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Connect with database.py's config and close on shutdown. The table is created by
    # create_schema(): IF NOT EXISTS, under a lock, so several workers can start at once.
    async with RegisterTortoise(app, config=database.tortoise_config()):
        await database.create_schema()
        yield


app = FastAPI(title="Neon + Tortoise ORM quickstart", lifespan=lifespan)


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
    """OK only if the database answers."""
    try:
        await connections.get("default").execute_query("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any failure here means "not healthy"
        raise HTTPException(503, detail=database.explain_error(exc)) from None
    return {"status": "ok"}
