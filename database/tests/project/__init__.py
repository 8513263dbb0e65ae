"""The library's own project: models, migrations, two scripts and a small app that exercise the
database package the way a user's project does, so that the library's tests never depend on
main.py, transactions.py, app.py, settings.py or the User model of the checkout they live in.

The tests run ``python members.py``, ``python ledger.py``, ``uvicorn web:app`` and
``python -m tortoise migrate`` in a copy of this folder with the package beside it
(database/testing/fixtures.py ``library_project``). In the test process its modules go by their
package names (``database.tests.project.members``), never by names yours could have.
"""
