"""The library's small app: ``uvicorn web:app``, on DATABASE_URL, with the package's start-up
check, one-line start-up errors and 503s."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import tortoise_neon

from fastapi import FastAPI
from members import Member
from pydantic import BaseModel
from tortoise import connections
from tortoise.contrib.fastapi import RegisterTortoise


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with RegisterTortoise(app, config=tortoise_neon.tortoise_config()):
        await tortoise_neon.check_schema()
        yield


app = FastAPI(lifespan=lifespan)
app.add_middleware(tortoise_neon.OneLineStartupErrors)
tortoise_neon.answer_database_errors(app)


class NewMember(BaseModel):
    name: str
    handle: str | None = None


@app.get("/members")
async def list_members(limit: int = 10) -> list[dict[str, object]]:
    return await Member.all().order_by("-id").limit(limit).values("id", "name")


@app.post("/members", status_code=201)
async def add_member(new: NewMember) -> dict[str, object]:
    member = await Member.create(name=new.name, handle=new.handle)
    return {"id": member.id, "name": member.name}


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/health/db")
async def database_health() -> dict[str, str]:
    await connections.get("default").execute_query("SELECT 1")
    return {"status": "ok"}
