"""The FastAPI app on Neon: round trips per request, and requests while the compute restarts.

Run: python tortoise-neon/bench/app_on_neon.py [--app DIR] [--clients 8] [--seconds 10]   (about 2 minutes)

It starts a throwaway PostgreSQL (the newest with TLS that tortoise_neon/testing/servers.py finds), the
Neon-faithful proxy in front of it (tortoise_neon/testing/neon_proxy.py, reached by Neon-shaped host names),
PgBouncer 1.21+ in transaction mode with ``max_prepared_statements=1000`` as Neon runs it
(``bash .ci/pgbouncer`` builds 1.24.1) and the system's PgBouncer 1.18 for the pooled host, and
``uvicorn app:app`` with Neon's console string. ``--app DIR`` runs the app of
another copy of the project (say, an older commit: ``git archive``) against the same servers.

1. Round trips per request: tortoise_neon/testing/proxy.py's counting proxy sits between the app and Neon's
   proxy, delaying the replies by a few ms; each endpoint is called 20 times after 3 warm-up
   calls, one at a time, and the round trips on the wire are divided by 20 (TLS hides the
   messages, not the flights). New connections during the count are shown apart.
2. Restarts under load: N clients, GET /users and POST /users alternating, while every
   connection is ended every 3 s (a suspend: a bare close on the pooled host, FATAL 57P01 on the
   direct one). Requests, status counts, p50/p99, 201s against the rows saved, and the lines the
   app logged (tracebacks counted).
"""

from __future__ import annotations

import argparse
import collections
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tortoise_neon.testing import child_env, hostnames, servers
from tortoise_neon.testing.apps import app_running
from tortoise_neon.testing.load import burst, round_trips_per_request
from tortoise_neon.testing.neon_proxy import NeonProxy, Target, in_front_of
from tortoise_neon.testing.proxy import ProxyThread

import httpx

DELAY_MS = 5.0  # enough for exact counts (tortoise_neon/testing/proxy.py); the counts, not the times, matter
COUNTED = 20  # tortoise_neon/testing/load.py: round_trips_per_request counts 20 calls by default
ENDPOINTS = [("GET", "/users"), ("POST", "/users"), ("GET", "/health"), ("GET", "/health/db")]


@dataclass
class Servers:
    postgres: servers.PostgresServer
    neon: NeonProxy
    bouncers: dict[str, servers.PgBouncer]
    ca: Path
    workdir: Path
    app: Path
    logs: list[Path] = field(default_factory=list)

    def url(self, host: str, database: str, port: int | None = None, **params: str) -> str:
        query = "sslmode=require&channel_binding=require"
        query += "".join(f"&{k}={v}" for k, v in params.items())
        return servers.console_url(host, port or self.neon.port, database, query=query)

    def use_pooler(self, name: str) -> None:
        bouncer = self.bouncers[name]
        self.neon.pooler = Target("127.0.0.1", bouncer.port,
                                  ssl.create_default_context(cafile=str(self.ca)))

    def fresh_database(self) -> str:
        name = f"bench_{uuid.uuid4().hex[:10]}"
        servers.admin_execute(self.postgres, f'CREATE DATABASE "{name}" OWNER {servers.APP_USER}')
        # The schema as the app's copy makes it (its migrations, through main.py), no row left.
        url = servers.console_url(self.postgres.host, self.postgres.port, name,
                                  query=f"sslmode=verify-full&sslrootcert={self.ca}")
        subprocess.run([sys.executable, "main.py", "--name", "setup"], cwd=self.app, check=True,
                       env=child_env(DATABASE_URL=url), stdout=subprocess.DEVNULL)
        servers.admin_execute(self.postgres, "DELETE FROM demo_users", database=name)
        return name

    def app_module(self) -> str:
        """app.py's app; in a copy from before app.py, examples/fastapi_app.py's."""
        return "app:app" if (self.app / "app.py").exists() else "examples.fastapi_app:app"

    @contextmanager
    def app_at(self, url: str) -> Iterator[tuple[httpx.Client, Path]]:
        """uvicorn with the app of ``self.app``, on ``url``; the client and the log file."""
        log = self.workdir / f"uvicorn-{len(self.logs)}.log"
        self.logs.append(log)
        env = child_env(DATABASE_URL=url, SSL_CERT_FILE=str(self.ca), PYTHONPATH=str(self.app))
        with app_running(env, log, self.app_module(), cwd=self.app, timeout=60) as client:
            yield client, log


@contextmanager
def started(app: Path) -> Iterator[Servers]:
    reason = hostnames.ensure()
    if reason:
        raise SystemExit(f"Error: {reason}")
    builds = [b for b in servers.find_builds() if b.tls]
    if not builds:
        raise SystemExit("Error: no PostgreSQL with TLS: apt-get install postgresql")
    modern, old = servers.neon_pgbouncer(), servers.system_pgbouncer()
    if modern is None or old is None:
        raise SystemExit("Error: needs PgBouncer 1.21+ (bash .ci/pgbouncer) and the system's "
                         "(apt-get install pgbouncer)")
    postgres = servers.start_postgres(builds[-1])
    workdir = Path(tempfile.mkdtemp(prefix="bench-app-"))
    assert postgres.ca_path is not None
    try:
        bouncers = {
            "1.24": servers.start_pgbouncer(postgres, modern, servers.NEON_PREPARED_STATEMENTS),
            "1.18": servers.start_pgbouncer(postgres, old),
        }
        try:
            with in_front_of(postgres, workdir) as neon:
                yield Servers(postgres, neon, bouncers, postgres.ca_path, workdir, app)
        finally:
            for bouncer in bouncers.values():
                bouncer.stop()
    finally:
        servers.remove(postgres)
        shutil.rmtree(workdir, ignore_errors=True)


def version(binary: str | None) -> str:
    return ".".join(map(str, servers.pgbouncer_version(binary))) if binary else "?"


def count_endpoints(s: Servers, url: str, proxy: ProxyThread
                    ) -> tuple[list[str], int, collections.Counter[int]]:
    """The app on ``url`` (through ``proxy``): a burst, then each endpoint's round trips."""
    cells, opened = [], 0
    with s.app_at(url) as (api, _):
        statuses = burst(api, "/users")
        for method, path in ENDPOINTS:
            counted = round_trips_per_request(api, proxy, method, path)
            if counted is None:
                cells.append("-")
                continue
            failed = f" ({counted.failed} failed)" if counted.failed else ""
            cells.append(f"{counted.round_trips:.2f}{failed}")
            opened += counted.opened
    return cells, opened, statuses


def round_trip_table(s: Servers) -> None:
    modern, old = version(servers.neon_pgbouncer()), version(servers.system_pgbouncer())
    setups = [  # (label, host, pooler, URL parameters)
        (f"pooled, PgBouncer {modern}", hostnames.POOLED, "1.24", {}),
        (f"pooled, PgBouncer {modern}, statement_cache_size=0", hostnames.POOLED, "1.24",
         {"statement_cache_size": "0"}),
        (f"pooled, PgBouncer {old}", hostnames.POOLED, "1.18", {}),
        (f"pooled, PgBouncer {old}, statement_cache_size=100", hostnames.POOLED, "1.18",
         {"statement_cache_size": "100"}),
        ("direct", hostnames.DIRECT, "1.24", {}),
    ]
    rows = [["setup", *(f"{m} {p}" for m, p in ENDPOINTS), "new conns", "burst first"]]
    for label, host, pooler, params in setups:
        s.use_pooler(pooler)
        database = s.fresh_database()
        with ProxyThread("127.0.0.1", s.neon.port, delay_ms=DELAY_MS) as proxy:
            cells, opened, statuses = count_endpoints(s, s.url(host, database, proxy.port,
                                                                **params), proxy)
            proxy.settle()
        shown = ", ".join(f"{code or 'no answer'}: {n}" for code, n in sorted(statuses.items()))
        rows.append([label, *cells, str(opened), shown])
    print(f"\nRound trips per request ({COUNTED} calls each, one at a time, after a burst of 80 "
          "concurrent requests and 3 warm-up calls):\n")
    print(table(rows))


@dataclass
class Load:
    """What the clients of one run under restarts saw."""

    statuses: collections.Counter[str] = field(default_factory=collections.Counter)
    latencies: list[float] = field(default_factory=list)
    created: list[int] = field(default_factory=list)
    not_saved: list[str] = field(default_factory=list)  # 503 with may_have_been_saved false
    stop: threading.Event = field(default_factory=threading.Event)

    def client(self, base: str, number: int) -> None:
        with httpx.Client(base_url=base, timeout=60) as client:
            i = 0
            while not self.stop.is_set():
                i += 1
                name = f"c{number}-{i}"
                started = time.perf_counter()
                try:
                    if i % 2:
                        response = client.get("/users", params={"limit": 5})
                    else:
                        response = client.post("/users", json={"name": name})
                except httpx.HTTPError as exc:
                    self.statuses[type(exc).__name__] += 1
                    continue
                self.latencies.append(time.perf_counter() - started)
                self.statuses[f"{response.request.method} {response.status_code}"] += 1
                if response.status_code == 201:
                    self.created.append(response.json()["id"])
                elif (response.status_code == 503 and response.request.method == "POST"
                      and response.json().get("may_have_been_saved") is False):
                    self.not_saved.append(name)


def under_restarts(s: Servers, host: str, clients: int, seconds: float, every: float
                   ) -> tuple[Load, str, list[str]]:
    """One run: the clients' view, the database, and the app's log lines besides INFO."""
    s.use_pooler("1.24")
    database = s.fresh_database()
    load = Load()
    with s.app_at(s.url(host, database)) as (api, log):
        threads = [threading.Thread(target=load.client, args=(str(api.base_url), n))
                   for n in range(clients)]
        for thread in threads:
            thread.start()
        end = time.monotonic() + seconds
        while time.monotonic() + every <= end:
            time.sleep(every)
            s.neon.suspend(hostnames.ENDPOINT)
        time.sleep(max(0.0, end - time.monotonic()))
        load.stop.set()
        for thread in threads:
            thread.join(120)
    output = [line for line in log.read_text().splitlines() if not line.startswith("INFO:")]
    return load, database, output


def restarts(s: Servers, clients: int, seconds: float, every: float) -> None:
    rows = [["endpoint", "requests", "statuses", "p50 ms", "p99 ms", "201s saved",
             "503 'not saved' found", "log lines", "tracebacks"]]
    lines_seen: list[str] = []
    for label, host in (("pooled", hostnames.POOLED), ("direct", hostnames.DIRECT)):
        load, database, output = under_restarts(s, host, clients, seconds, every)
        saved = {r["id"] for r in servers.admin_query(s.postgres, "SELECT id FROM demo_users",
                                                      database=database)}
        found = servers.admin_query(s.postgres, "SELECT count(*) FROM demo_users WHERE name = "
                                    "ANY($1::text[])", load.not_saved, database=database)[0][0]
        lines_seen += [f"[{label}] {line}" for line in output]
        times = sorted(load.latencies)
        rows.append([
            label, str(len(times)),
            ", ".join(f"{k}: {v}" for k, v in sorted(load.statuses.items())),
            f"{statistics.median(times) * 1000:.1f}", f"{times[int(len(times) * 0.99)] * 1000:.1f}",
            f"{len(set(load.created) & saved)} of {len(load.created)} ({len(saved)} rows)",
            f"{found} of {len(load.not_saved)}", str(len(output)),
            str(sum(line.startswith("Traceback") for line in output))])
    print(f"\nUnder restarts: {clients} clients for {seconds:g} s, GET and POST /users "
          f"alternating, every connection ended every {every:g} s:\n")
    print(table(rows))
    print("\nWhat the app logged besides INFO: each distinct line that is not inside a traceback "
          "(the log lines, and each traceback's last line), with its count:\n")
    top = [line for line in lines_seen if not line.split("] ", 1)[1][:1].isspace()]
    for line, count in collections.Counter(top).most_common(12):
        print(f"{count:5d}  {line}")


def table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app", type=Path, default=ROOT,
                        help="the project copy whose app runs (app.py; examples/fastapi_app.py in an older copy)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--every", type=float, default=3.0, help="seconds between suspends")
    args = parser.parse_args()
    with started(args.app.resolve()) as s:
        print(f"PostgreSQL {s.postgres.build.version}; app from {args.app}")
        round_trip_table(s)
        restarts(s, args.clients, args.seconds, args.every)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
