"""Your project's settings: the tortoise_neon library reads them, as Django reads settings.py.

You edit this file; the library (``tortoise-neon/``) is not yours to edit. DATABASE_URL (and
DATABASE_URL_UNPOOLED, for migrations) come from the environment or ``.env``, not from here.
"""

# Every module that defines models. Both scripts, the Tortoise CLI (migrations), the app and
# the tests read this list. main.py defines User; add yours: ["main", "blog"] for a blog.py.
MODELS = ["main"]
