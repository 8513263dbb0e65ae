"""Adds a product from the command line: python shop_script.py SKU NAME"""

import asyncio
import sys

from shop.app import app, lifespan
from shop.models import Product


async def main() -> None:
    async with lifespan(app):  # the app's own Tortoise set-up
        product = await Product.create(sku=sys.argv[1], name=sys.argv[2])
        print(f"Added product {product.sku}")


if __name__ == "__main__":
    asyncio.run(main())
