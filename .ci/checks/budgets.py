"""The round-trip and statement budgets of the template's scripts: .ci/checks guards them
(test_round_trips.py), the bench prints its figures against them (.ci/bench/roundtrips.py)."""

# script: (round trips without a HelloRetryRequest, with the SSLRequest; statements executed),
# on a database the migrations were applied to: every run after the first
BUDGETS = {
    # TCP 1, SSLRequest 1, TLS 1, SCRAM 3, lock + migrations count 1, INSERT 2, SELECT 2;
    # nothing to close (10 with direct TLS)
    "main.py": (11, 3),
    # the same connect and count (7), BEGIN, INSERT 2, ROLLBACK, BEGIN, INSERT 1 (statement
    # cached), COMMIT, SELECT 2 = 16 (15 with direct TLS)
    "transactions.py": (16, 8),
}
# The first run, on a fresh database, also applies migrations/0001_initial.py as `tortoise
# migrate` does (the same count finds it pending): BEGIN, the advisory lock, Tortoise's executor
# (its table 1, the applied ones 2 then 1, SAVEPOINT, CREATE TABLE, RELEASE, the record 2),
# COMMIT: 12 more round trips and 11 more statements, once per database.
FIRST_RUN = 12, 11
