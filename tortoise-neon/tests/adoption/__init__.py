"""A small Tortoise + FastAPI app written as such apps are, before it adopts tortoise_neon: the
``shop`` package (``Product``, its unique ``sku``; ``uvicorn shop.app:app``) and its script
``shop_script.py``. tests/test_adoption.py applies the diff in the library's README to a copy
of these files and runs the result. Nothing here imports tortoise_neon: that is the point.
"""
