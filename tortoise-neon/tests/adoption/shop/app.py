import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from pydantic import BaseModel
from shop.models import Product
from tortoise.contrib.fastapi import RegisterTortoise


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with RegisterTortoise(app, db_url=os.environ["DATABASE_URL"], modules={"models": ["shop.models"]}, generate_schemas=True):
        yield


app = FastAPI(lifespan=lifespan)


class NewProduct(BaseModel):
    sku: str
    name: str


@app.post("/products", status_code=201)
async def add_product(new: NewProduct) -> dict[str, object]:
    product = await Product.create(sku=new.sku, name=new.name)
    return {"id": product.id, "sku": product.sku}


@app.get("/products")
async def list_products() -> list[dict[str, object]]:
    return await Product.all().order_by("sku").values("sku", "name")


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}
