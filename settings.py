"""Your project's settings: the database package reads them, as Django reads settings.py.

You edit this file; you never need to open ``tortoise_neon/``. DATABASE_URL (and
DATABASE_URL_UNPOOLED, for migrations) come from the environment or ``.env``, not from here.
"""

# Every module that defines models. Both scripts, the Tortoise CLI (migrations), the app and
# the tests read this list. main.py defines User; add yours: ["main", "blog"] for a blog.py.
MODELS = ["main"]
