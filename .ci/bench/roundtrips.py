"""Round trips on the wire: main.py and transactions.py against a hand-written asyncpg script.

Run: python .ci/bench/roundtrips.py [--server pg18]   (about a minute per server)

For each PostgreSQL with TLS the tests find (tortoise_neon/testing/servers.py: the system's, and
PostgreSQL 17+ from ``python -m tortoise_neon.testing.get_postgres``), it starts a throwaway server (TLS
from a throwaway CA, SCRAM) and puts tortoise_neon/testing/proxy.py's counting proxy in front of it. Each script
runs as a user runs it, in a fresh database it ran in once already (the migrations applied:
every run after the first), with DATABASE_URL pointing at the proxy in Neon's console form
(``?sslmode=require&channel_binding=require``, so TLS is verified: SSL_CERT_FILE names the CA),
plus ``&sslnegotiation=direct`` on PostgreSQL 17+ (direct TLS: no SSLRequest round trip).

- counted: round trips seen on the wire (tortoise_neon/testing/proxy.py says how they are counted), with the
  proxy delaying the server's traffic by D = 25 ms. A TLS 1.3 HelloRetryRequest is detected and
  shown apart: PostgreSQL 15 to 17 offer one curve (P-256) and Python's client offers X25519
  first; PostgreSQL 18 offers X25519 too, and must need none.
- at D=0: the same count without delay, over several runs. Without delay a client that does not
  wait for the server (PromptCloseConnection: Terminate, then close) can still see the server's
  goodbye arrive before its own close completes, so this count may show one spurious round trip.
- from wall time: (median wall time at D=25 - median at D=0) / 25 ms, over whole script runs
  (Python's start-up makes this one noisy: a few round trips either way).
- from conn. time: the same from the connection's life on the wire (connect to hang-up).
- statements: what the server executed in that database (``log_statement = 'all'``).
- the breakdown: which messages took which round trip, from an identical run with
  ``sslmode=disable`` (TLS hides the messages from the proxy), aligned with the TLS run.

Then, on the newest server only, the scaling check: main.py on a 100,000-row demo_users against
a one-row one (wall time, peak RSS of the script, bytes printed), straight to the server; and
the start-up time against the guide's imports.

The bench always uses its own local server: through a proxy on 127.0.0.1 a remote server's
certificate (issued for its host name) would not verify, so TEST_DATABASE_URL is not used here.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent  # the checkout
if str(ROOT / ".ci") not in sys.path:  # the template's checks: their budgets
    sys.path.insert(0, str(ROOT / ".ci"))

from tortoise_neon.testing import child_env, pglog, servers
from tortoise_neon.testing.proxy import Flight, ProxyThread, Trace, describe_flights

import asyncpg
from checks.budgets import BUDGETS

DELAY_MS = 25.0
REPEATS = 7  # runs per script and delay; medians
SCALE_ROWS = 100_000
SCALE_REPEATS = 7
PLAIN = ".ci/bench/plain_asyncpg.py"  # the floor: plain asyncpg, the same statements
# (script, target: round trips without a HelloRetryRequest, with the SSLRequest): the budgets
# .ci/checks/test_round_trips.py guards (.ci/checks/budgets.py)
SCRIPTS = [*((script, trips) for script, (trips, _) in BUDGETS.items()), (PLAIN, None)]
STATEMENT_BUDGET = {**{script: statements for script, (_, statements) in BUDGETS.items()},
                    PLAIN: 3}
SCALE_TARGET = 1.15


@dataclass
class Run:
    script: str
    delay: float
    wall: float
    returncode: int
    stdout: str
    stderr: str
    maxrss_kb: int
    traces: list[Trace] = field(default_factory=list)
    sessions: list[pglog.Session] = field(default_factory=list)

    @property
    def trace(self) -> Trace:
        return self.traces[0]


def run_child(script: str, url: str, ca: Path | None, cwd: Path) -> Run:
    """``python script`` as a user runs it; wall time and the child's own peak RSS (wait4)."""
    env = child_env(DATABASE_URL=url)
    if ca:
        env["SSL_CERT_FILE"] = str(ca)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, str(ROOT / script)], env=env, cwd=cwd,
                                   stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    return Run(script, 0.0, wall, process.returncode, stdout, stderr, int(usage.ru_maxrss))


class Bench:
    def __init__(self, server: servers.PostgresServer, proxy: ProxyThread, cwd: Path) -> None:
        self.server, self.proxy, self.cwd = server, proxy, cwd
        self.direct = server.direct_tls  # PostgreSQL 17+: sslnegotiation=direct, one less

    def admin(self, sql: str, database: str = "postgres") -> None:
        servers.admin_execute(self.server, sql, database)

    def fresh_database(self) -> str:
        name = f"bench_{uuid.uuid4().hex[:10]}"
        self.admin(f'CREATE DATABASE "{name}" OWNER {servers.APP_USER}')
        self.admin(f"ALTER DATABASE \"{name}\" SET log_statement = 'all'")
        return name

    def drop(self, name: str) -> None:
        self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def through_proxy(self, script: str, delay: float, query: str = "") -> Run:
        """One run of ``script`` in a fresh database, through the proxy delaying by ``delay``,
        after a first run straight to the server (which applies the migrations)."""
        name = self.fresh_database()
        try:
            first = self.straight(script, name)
            if first.returncode != 0:
                raise SystemExit(f"{script} failed ({first.returncode}):\n{first.stderr}")
            offset = pglog.log_size(self.server.logfile)
            self.proxy.clear()
            self.proxy.set_delay(delay)
            url = self.server.url(name, port=self.proxy.port, query=query,
                                  direct=self.direct and not query)
            run = run_child(script, url, self.server.ca_path, self.cwd)
            run.delay = delay
            if run.returncode != 0:
                raise SystemExit(f"{script} failed ({run.returncode}):\n{run.stderr}")
            run.traces = self.proxy.settle()
            run.sessions = pglog.sessions_of(self.server.logfile, offset, name, servers.APP_USER)
            return run
        finally:
            self.drop(name)

    def straight(self, script: str, name: str) -> Run:
        """A run straight to the server, without the proxy."""
        url = self.server.url(name, direct=self.direct)
        return run_child(script, url, self.server.ca_path, self.cwd)


def described(trace: Trace) -> str:
    if trace.hello_retries:
        return f"{trace.round_trips} = {trace.round_trips_without_hrr} + {trace.hello_retries} HRR"
    return str(trace.round_trips)


def breakdown(tls: Trace, plain: Trace) -> list[str]:
    """The TLS run's round trips, labelled with the messages of the sslmode=disable run.

    From the client's first encrypted flight (TLS Finished + StartupMessage) on, the TLS run
    has the same flights as the plaintext one: show the plaintext run's messages there.
    """
    first_app = next((i for i, f in enumerate(tls.flights) if "AppData" in f.client), None)
    tail = tls.flights[first_app:] if first_app is not None else []
    if first_app is None or [f.counted for f in tail] != [f.counted for f in plain.flights]:
        return (["(TLS run)"] + tls.breakdown() + ["(run with sslmode=disable)"]
                + plain.breakdown())
    flights: list[Flight] = list(tls.flights[:first_app])
    first = plain.flights[0]
    flights.append(Flight(client=["TLS Finished", *first.client], server=first.server,
                          counted=first.counted))
    flights += plain.flights[1:]
    return describe_flights(flights)


def seconds(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} s"


def table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


def round_trip_section(bench: Bench) -> bool:
    ok = True
    rows = [["script", f"counted (D={DELAY_MS:g} ms)", f"at D=0 ({REPEATS} runs)",
             "from wall time", "from conn. time", "target", "statements", "conns", "clean close", "wall D=0", f"wall D={DELAY_MS:g}",
             "verdict"]]
    details: list[str] = []
    for script, _ in SCRIPTS:  # warm up: bytecode caches, page cache
        bench.through_proxy(script, 0.0)
    hrr_allowed = bench.server.major < 18  # PostgreSQL 18 offers X25519, as Python's client does
    for script, target in SCRIPTS:
        if target is not None and bench.direct:
            target -= 1  # no SSLRequest
        runs = {d: [bench.through_proxy(script, d) for _ in range(REPEATS)] for d in (0.0, DELAY_MS)}
        plain = bench.through_proxy(script, DELAY_MS, query="sslmode=disable")
        delayed = runs[DELAY_MS]
        every = runs[0.0] + delayed
        counted = {r.trace.round_trips for r in delayed}
        at_zero = sorted(r.trace.round_trips for r in runs[0.0])
        trace = delayed[0].trace
        estimate = ((statistics.median(r.wall for r in delayed)
                     - statistics.median(r.wall for r in runs[0.0])) / (DELAY_MS / 1000))
        on_wire = ((statistics.median(r.trace.duration for r in delayed)
                    - statistics.median(r.trace.duration for r in runs[0.0])) / (DELAY_MS / 1000))
        statements = {len(s.statements) for r in every for s in r.sessions}
        conns = {len(r.traces) for r in every} | {len(r.sessions) for r in every}
        clean = all(s.disconnected and not s.problems for r in every for s in r.sessions)
        verdict = "-"
        if target is not None:
            good = (len(counted) == 1 and trace.round_trips_without_hrr <= target
                    and (hrr_allowed or trace.hello_retries == 0)
                    and max(statements) <= STATEMENT_BUDGET[script] and conns == {1} and clean)
            verdict = "OK" if good else "MISSED"
            ok &= good
        rows.append([
            script,
            described(trace) + ("" if len(counted) == 1 else f" (varies: {sorted(counted)})"),
            f"{at_zero[0]}" if at_zero[0] == at_zero[-1] else f"{at_zero[0]}-{at_zero[-1]}",
            f"{estimate:.1f}",
            f"{on_wire:.1f}",
            (f"<= {target}" + (" + HRR" if hrr_allowed else "")) if target is not None
            else "(baseline)",
            "/".join(map(str, sorted(statements))),
            "/".join(map(str, sorted(conns))),
            "yes" if clean else "NO",
            seconds([r.wall for r in runs[0.0]]),
            seconds([r.wall for r in delayed]),
            verdict,
        ])
        details.append(f"\n{script}: {described(trace)} round trips; "
                       f"statements executed: {len(delayed[0].sessions[0].statements)}")
        details += ["  " + line for line in breakdown(trace, plain.trace)]
        for session in delayed[0].sessions:
            details += ["    server ran: " + s.splitlines()[0][:90] for s in session.statements]
    print(table(rows))
    print("\nHRR = TLS 1.3 HelloRetryRequest (one extra round trip before PostgreSQL 18). "
          "'at D=0' may count one spurious round trip at close (see the docstring).")
    print("\n".join(details))
    return ok


async def fill(server: servers.PostgresServer, name: str, rows: int) -> None:
    conn = await servers.admin_connect(server, name)
    try:
        await conn.execute(
            "INSERT INTO demo_users (name, created_at) "
            f"SELECT 'User ' || g, now() FROM generate_series(1, {rows}) AS g")
        await conn.execute("VACUUM ANALYZE demo_users")  # what autovacuum does soon after
        total = await conn.fetchval("SELECT count(*) FROM demo_users")
        assert total == rows + 1, total
    finally:
        await conn.close()


def scaling_section(bench: Bench) -> bool:
    """main.py on a one-row table against a 100,000-row one, each reset to its size per run."""
    sizes = {bench.fresh_database(): 1, bench.fresh_database(): SCALE_ROWS}
    runs: dict[str, list[Run]] = {name: [] for name in sizes}
    try:
        for name, rows in sizes.items():
            assert bench.straight("main.py", name).returncode == 0  # the table and row id 1
            if rows > 1:
                asyncio.run(fill(bench.server, name, rows - 1))
        for _ in range(SCALE_REPEATS):  # interleaved, so that drift hits both alike
            for name, rows in sizes.items():
                run = bench.straight("main.py", name)
                if run.returncode != 0:
                    raise SystemExit(f"main.py failed:\n{run.stderr}")
                runs[name].append(run)
                bench.admin(f"DELETE FROM demo_users WHERE id > {rows}", name)  # back to size
    finally:
        for name in sizes:
            bench.drop(name)
    table_rows = [["demo_users rows", "wall (median)", "peak RSS (median)", "stdout bytes",
                   "stdout lines"]]
    wall, rss, out = {}, {}, {}
    for name, rows in sizes.items():
        wall[rows] = statistics.median(r.wall for r in runs[name])
        rss[rows] = statistics.median(r.maxrss_kb for r in runs[name]) / 1024
        out[rows] = sorted(len(r.stdout.encode()) for r in runs[name])
        lines = sorted(len(r.stdout.splitlines()) for r in runs[name])
        table_rows.append([f"{rows:,} (+1 inserted)", f"{wall[rows]:.3f} s", f"{rss[rows]:.1f} MB",
                           "-".join(map(str, sorted({out[rows][0], out[rows][-1]}))),
                           "-".join(map(str, sorted({lines[0], lines[-1]})))])
    time_ratio, rss_ratio = wall[SCALE_ROWS] / wall[1], rss[SCALE_ROWS] / rss[1]
    # bounded output: the 10 newest users whatever the size (the one-row table lists 2)
    bounded = out[SCALE_ROWS][-1] - out[SCALE_ROWS][0] <= 8 and out[SCALE_ROWS][-1] < 1024
    ok = time_ratio <= SCALE_TARGET and rss_ratio <= 1.10 and bounded
    table_rows.append(["ratio", f"{time_ratio:.2f}x (target <= {SCALE_TARGET}x)",
                       f"{rss_ratio:.2f}x", "bounded" if bounded else "NOT BOUNDED", ""])
    print(f"\nScaling: main.py at D=0, straight to the server (TLS), median of {SCALE_REPEATS} "
          f"interleaved runs each; the {SCALE_ROWS:,}-row table is VACUUM ANALYZEd")
    print(table(table_rows))
    print(f"scaling: {'OK' if ok else 'MISSED'}")
    return ok


GUIDE_IMPORTS = ("from tortoise import Tortoise, fields, run_async; "
                 "from tortoise.models import Model; from dotenv import load_dotenv; "
                 "import tortoise.backends.asyncpg")


def startup_section(cwd: Path) -> bool:
    """Start-up: main.py up to parsing its arguments, against what the guide's script imports."""
    def median_wall(command: list[str], runs: int = 9) -> float:
        times = []
        for _ in range(runs):
            begun = time.perf_counter()
            subprocess.run(command, cwd=cwd, capture_output=True, check=True)
            times.append(time.perf_counter() - begun)
        return statistics.median(times)

    ours = median_wall([sys.executable, str(ROOT / "main.py"), "--help"])
    guide = median_wall([sys.executable, "-c", GUIDE_IMPORTS])
    print("\nStart-up, median of 9 runs each (no database): imports and argument parsing")
    print(table([["command", "wall"],
                 ["python main.py --help", seconds([ours])],
                 ["the guide's imports (tortoise, asyncpg backend, dotenv)", seconds([guide])]]))
    ok = ours <= guide * 1.10  # within noise of the guide's
    print(f"start-up: {'OK' if ok else 'SLOWER than the guide'} ({ours / guide:.2f}x)")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", action="append", metavar="ID",
                        help="only this server (pg15, pg18, ...; as in the pytest header)")
    args = parser.parse_args()
    if os.environ.get("TEST_DATABASE_URL"):
        print("TEST_DATABASE_URL is set but not used: the bench proxies a local server (see the "
              "docstring)")
    builds = [b for b in servers.find_builds() if b.tls]
    if args.server:
        builds = [b for b in builds if b.id in args.server]
    if not builds:
        print("The bench needs PostgreSQL with TLS: apt-get install postgresql, or "
              "python -m tortoise_neon.testing.get_postgres (PostgreSQL 18)")
        return 2
    started = time.monotonic()
    ok = True
    with tempfile.TemporaryDirectory() as cwd:
        for build in builds:
            server = servers.start_postgres(build)
            try:
                negotiation = "direct TLS" if server.direct_tls else "SSLRequest, then TLS"
                print(f"== PostgreSQL {build.version} ({build.origin}) on 127.0.0.1: TLS verified "
                      f"({negotiation}), SCRAM; Python {sys.version.split()[0]}, "
                      f"{ssl.OPENSSL_VERSION}, asyncpg {asyncpg.__version__}; round trips "
                      "through tortoise_neon/testing/proxy.py\n")
                with ProxyThread(server.host, server.port) as proxy:
                    bench = Bench(server, proxy, Path(cwd))
                    ok &= round_trip_section(bench)
                    if build is builds[-1]:  # the newest server only: these do not vary
                        ok &= scaling_section(bench)
                        ok &= startup_section(Path(cwd))
            finally:
                servers.remove(server)
            print()
    print(f"{'all targets met' if ok else 'a target was missed'} "
          f"({time.monotonic() - started:.0f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
