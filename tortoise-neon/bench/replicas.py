"""Read replicas and workers: requests per second, the replica's share of reads, round trips.

Run: python tortoise-neon/bench/replicas.py [--seconds 6] [--clients 24]   (about a minute)

It starts the newest local PostgreSQL with TLS (tortoise_neon/testing/servers.py), a hot standby of
it that replays 2 s behind (``start_standby``), and PgBouncer 1.24 (Neon's pooler, transaction
mode, ``max_prepared_statements=1000``) in front of each: the pooled path, as
``DATABASE_URL`` (``-pooler``) and ``DATABASE_URL_REPLICA`` would be on Neon. The app is the
library's (``web:app``, ``/members``), under ``uvicorn --workers N``.

1. For 1, 2 and 3 workers, with and without DATABASE_URL_REPLICA: ``--clients`` clients for
   ``--seconds`` seconds (tortoise_neon/testing/load.py ``steady``: each writes one request in
   three, keeps its cookies as a browser does, and opens a new connection for each request, so
   the workers share them): requests per second, the answers, and the share of the reads
   (statements on ``library_members`` in each server's log, ``log_statement = 'all'``) that the
   replica served.
2. Round trips per request (tortoise_neon/testing/proxy.py counts them, in front of both poolers),
   one worker, one request at a time: a client that reads and never wrote, a write, and a read
   right after the same client's write (its cookie: the replica check, then the primary while
   the replica is behind), with and without a replica.

Figures depend on this machine; the bench asserts nothing.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tortoise_neon.testing import child_env, servers
from tortoise_neon.testing.apps import app_running
from tortoise_neon.testing.load import steady
from tortoise_neon.testing.proxy import ProxyThread

import httpx

from tests.project import library_project

TABLE = "library_members"


def reads_in_log(server: servers.PostgresServer, since: int) -> int:
    """Statements that read the members' table, in the server's log after byte ``since``."""
    with server.logfile.open("rb") as log:
        log.seek(since)
        text = log.read().decode(errors="replace")
    return sum(1 for line in text.splitlines()
               if "statement:" in line or "execute" in line
               if "SELECT" in line and TABLE in line and "LIMIT 0" not in line)


def log_size(server: servers.PostgresServer) -> int:
    return server.logfile.stat().st_size


def total_round_trips(*proxies: ProxyThread) -> int:
    return sum(t.round_trips for p in proxies for t in list(p.proxy.traces))


def round_trips(base: str, proxies: tuple[ProxyThread, ...], count: int = 20) -> dict[str, float]:
    """Per request, one at a time: a reading client, a write, a read right after it."""
    figures: collections.defaultdict[str, float] = collections.defaultdict(float)
    with httpx.Client(base_url=base, timeout=60) as reader, \
            httpx.Client(base_url=base, timeout=60) as writer:
        for _ in range(3):  # warm: connections open, statements prepared
            reader.get("/members")
            writer.get("/members")
        for _ in range(count):
            for label, call in (("read, no write", lambda: reader.get("/members")),
                                ("write", lambda: writer.post("/members", json={"name": "w"})),
                                ("read after own write", lambda: writer.get("/members"))):
                time.sleep(0.1)
                before = total_round_trips(*proxies)
                call().raise_for_status()
                time.sleep(0.1)
                figures[label] += (total_round_trips(*proxies) - before) / count
    return dict(figures)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--clients", type=int, default=24)
    args = parser.parse_args()
    builds = [b for b in servers.find_builds() if b.tls]
    binary = servers.neon_pgbouncer()
    if not builds or binary is None:
        raise SystemExit("Error: needs PostgreSQL with TLS and PgBouncer 1.21+ (bash "
                         ".ci/setup-servers)")
    workdir = Path(tempfile.mkdtemp(prefix="bench-replicas-"))
    primary = servers.start_postgres(builds[-1])
    standby = servers.start_standby(primary)
    bouncers = [servers.start_pgbouncer(s, binary, servers.NEON_PREPARED_STATEMENTS)
                for s in (primary, standby)]
    try:
        for server in (primary, standby):
            servers.admin_execute(server, "ALTER SYSTEM SET log_statement = 'all'")
            servers.admin_execute(server, "SELECT pg_reload_conf()")
        servers.admin_execute(primary, f"CREATE DATABASE bench OWNER {servers.APP_USER}")
        app = library_project(workdir / "project")
        env = child_env(DATABASE_URL=primary.url("bench"), SSL_CERT_FILE=str(primary.ca_path))
        import subprocess

        subprocess.run([sys.executable, "members.py", "--name", "setup"], cwd=app, env=env,
                       check=True, stdout=subprocess.DEVNULL)
        time.sleep(3)  # the standby has the table
        pooled = [primary.url("bench", port=b.port) for b in bouncers]
        print(f"PostgreSQL {builds[-1].describe()}, a standby 2 s behind, PgBouncer "
              f"{'.'.join(map(str, servers.pgbouncer_version(binary)))} in front of each; "
              f"{args.clients} clients for {args.seconds:g} s, each writing one request in three\n")
        print(f"{'workers':>7}  {'replica':<8} {'req/s':>7}  {'reads on replica':>16}  answers")
        for workers in (1, 2, 3):
            for with_replica in (False, True):
                env = child_env(DATABASE_URL=pooled[0], SSL_CERT_FILE=str(primary.ca_path))
                if with_replica:
                    env["DATABASE_URL_REPLICA"] = pooled[1]
                log = workdir / f"uvicorn-{workers}-{with_replica}.log"
                with app_running(env, log, "web:app", cwd=app, workers=workers) as api:
                    steady(str(api.base_url), "/members", args.clients, 1.0)  # warm every worker
                    time.sleep(2.5)
                    marks = [log_size(primary), log_size(standby)]
                    results = steady(str(api.base_url), "/members", args.clients, args.seconds)
                    time.sleep(0.5)
                answers = collections.Counter(answer for answer, _ in results)
                on_primary = reads_in_log(primary, marks[0])
                on_replica = reads_in_log(standby, marks[1])
                share = on_replica / max(1, on_primary + on_replica)
                shown = ", ".join(f"{k}: {v}" for k, v in sorted(answers.items()))
                print(f"{workers:>7}  {'yes' if with_replica else 'no':<8} "
                      f"{len(results) / args.seconds:>7.0f}  {share:>16.0%}  {shown}")
        print("\nRound trips per request (one worker, one request at a time, both poolers "
              "counted):")
        print(f"{'replica':<8} {'read, no write':>15} {'write':>7} {'read after own write':>21}")
        for with_replica in (False, True):
            with ProxyThread("127.0.0.1", bouncers[0].port) as p0, \
                    ProxyThread("127.0.0.1", bouncers[1].port) as p1:
                env = child_env(DATABASE_URL=primary.url("bench", port=p0.port),
                                SSL_CERT_FILE=str(primary.ca_path))
                if with_replica:
                    env["DATABASE_URL_REPLICA"] = primary.url("bench", port=p1.port)
                log = workdir / f"uvicorn-rt-{with_replica}.log"
                with app_running(env, log, "web:app", cwd=app) as api:
                    api.get("/members")
                    time.sleep(1.0)  # the replica's connection opens in the background
                    figures = round_trips(str(api.base_url), (p0, p1))
            print(f"{'yes' if with_replica else 'no':<8} {figures['read, no write']:>15.2f} "
                  f"{figures['write']:>7.2f} {figures['read after own write']:>21.2f}")
    finally:
        for bouncer in bouncers:
            bouncer.stop()
        servers.remove(standby)
        servers.remove(primary)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
