"""Neon-shaped host names for the tests, resolving to this machine.

The client treats ``*.neon.tech`` hosts as Neon (the pooled ``-pooler`` host, the endpoint in
the first label), and Neon's proxy reads the endpoint from the TLS SNI host name: so the tests
connect to the Neon-faithful proxy through names of Neon's own shape, which must resolve to
127.0.0.1. As root (CI), ``ensure()`` adds them to /etc/hosts inside a marked block, and takes
that block out again at the end of the session (``restore()``: conftest.py) and at the process's
exit (atexit), leaving the file as it was; otherwise it says which line to add.

Each block says whose it is on its first line: ``(pid 1234 started 5678)``, the process that
wrote it (its start time tells a reused pid apart), or ``(permanent)``, written on purpose to
stay (``ensure(permanent=True)``: .ci/setup-servers on a runner whose user has sudo). A run that
died without its clean-up (``os._exit``, SIGKILL) leaves its block behind: the next ``ensure()``
takes out every block whose process is gone. A block of a run still going is left alone, and so
is a block without an owner (an older version's; it may belong to a run still going).
The file is rewritten atomically: a temporary file beside it, then ``os.replace``.

Only the standard library: .ci/setup-servers imports this file by path, with sudo.
"""

from __future__ import annotations

import atexit
import os
import re
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path

DOMAIN = "us-east-2.aws.neon.tech"  # the proxy's certificate is for *.DOMAIN
ENDPOINT = "ep-quiet-lake-a1b2c3d4"
DIRECT = f"{ENDPOINT}.{DOMAIN}"
POOLED = f"{ENDPOINT}-pooler.{DOMAIN}"
TYPO = f"ep-quiet-lake-a1b2c3d5.{DOMAIN}"  # a typo in the endpoint id: resolves, unknown to Neon
REPLICA_ENDPOINT = "ep-still-pond-e5f6a7b8"  # a read replica's endpoint (its own compute)
REPLICA = f"{REPLICA_ENDPOINT}.{DOMAIN}"
NAMES = (DIRECT, POOLED, TYPO, REPLICA)

HOSTS_FILE = Path("/etc/hosts")
BEGIN = "# BEGIN tortoise-neon-quickstart tests: Neon-shaped names for the local proxy"
END = "# END tortoise-neon-quickstart tests"
PERMANENT = "permanent"
# A block: its BEGIN line (the owner in parentheses, if any), its lines, its END line.
_BLOCK = re.compile(re.escape(BEGIN) + r"(?: \((?P<owner>[^)\n]*)\))?[^\n]*\n.*?"
                    + re.escape(END) + r"[^\n]*(?:\n|$)", re.DOTALL)
_OWNER = re.compile(r"pid (?P<pid>\d+)(?: started (?P<started>\d+))?")


def unresolved(names: tuple[str, ...] = NAMES) -> list[str]:
    """The names that do not resolve to 127.0.0.1 only."""
    bad = []
    for name in names:
        try:
            addresses = {info[4][0] for info in socket.getaddrinfo(name, 5432, socket.AF_INET)}
        except socket.gaierror:
            addresses = set()
        if addresses != {"127.0.0.1"}:
            bad.append(name)
    return bad


def _started(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks after boot, /proc), or None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]  # field 22: starttime


def owner() -> str:
    """This process, as its blocks name it: ``pid 1234 started 5678``."""
    started = _started(os.getpid())
    return f"pid {os.getpid()}" + (f" started {started}" if started else "")


def alive(owner_text: str) -> bool:
    """Whether a block's owner may still need it: permanent, unknown (no owner: an older
    version's), or a process that is still running (the same one: same start time)."""
    match = _OWNER.fullmatch(owner_text)
    if owner_text == PERMANENT or match is None:
        return True
    pid = int(match["pid"])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # running, as another user
    started = _started(pid)
    return match["started"] is None or started is None or started == match["started"]


def hosts_block(names: tuple[str, ...] = NAMES, owner_text: str | None = None) -> str:
    return f"{BEGIN} ({owner_text or owner()})\n127.0.0.1 {' '.join(names)}\n{END}\n"


def blocks(text: str) -> list[str]:
    """The owners of the blocks in ``text`` ("" for a block that names none)."""
    return [match["owner"] or "" for match in _BLOCK.finditer(text)]


def without_blocks(text: str, drop: Callable[[str], bool]) -> str:
    """``text`` without the blocks whose owner ``drop(owner)`` is true (all else as it is)."""
    return _BLOCK.sub(lambda m: "" if drop(m["owner"] or "") else m[0], text)


def write(hosts_file: Path, text: str) -> None:
    """``hosts_file`` holds ``text`` now, never half of it: a temporary file beside it, then
    ``os.replace``. Where that cannot be done, in place: in a container /etc/hosts is often a
    bind mount (Docker's own), which cannot be replaced (EBUSY), and /etc may be read-only
    while the mounted file is not."""
    temporary = None
    try:
        fd, temporary = tempfile.mkstemp(dir=hosts_file.parent, prefix=f".{hosts_file.name}.")
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        if hosts_file.exists():  # its mode and owner, not mkstemp's 0600
            status = hosts_file.stat()
            os.chmod(temporary, status.st_mode & 0o7777)
            if hasattr(os, "chown") and os.stat(temporary).st_uid != status.st_uid:
                os.chown(temporary, status.st_uid, status.st_gid)
        else:
            os.chmod(temporary, 0o644)
        os.replace(temporary, hosts_file)
        temporary = None
    except OSError:
        hosts_file.write_text(text)  # in place (a bind mount, a read-only /etc)
    finally:
        if temporary is not None and os.path.exists(temporary):
            os.unlink(temporary)


def remove_stale(hosts_file: Path = HOSTS_FILE) -> None:
    """Take out the blocks of runs that are gone (they died without their clean-up)."""
    try:
        text = hosts_file.read_text()
    except FileNotFoundError:
        return
    kept = without_blocks(text, lambda who: not alive(who))
    if kept != text:
        write(hosts_file, kept)


def ensure(names: tuple[str, ...] = NAMES, hosts_file: Path = HOSTS_FILE, *,
           permanent: bool = False) -> str | None:
    """Make ``names`` resolve to 127.0.0.1: None when they do, else the reason they do not.

    As root it first takes out the blocks of runs that are gone. It adds a block of its own when
    the names do not resolve, or when another run's block is there (that run takes it out when
    it ends, maybe before this one does); it is taken out again at ``restore()`` and at exit.
    ``permanent``: a block that stays (no owner process), for .ci/setup-servers.
    """
    root = hasattr(os, "geteuid") and os.geteuid() == 0
    if root:
        remove_stale(hosts_file)
    mine = PERMANENT if permanent else owner()
    text = hosts_file.read_text() if hosts_file.exists() else ""
    # Another run's block (or one without an owner: an older version's run, perhaps going on)
    # is taken out when that run ends, maybe before this one does: then a block of our own too.
    others = [who for who in blocks(text) if who not in (mine, PERMANENT)]
    if not unresolved(names) and (mine in blocks(text) or not others):
        return None
    line = f"127.0.0.1 {' '.join(names)}"
    if not root:
        if not unresolved(names):
            return None  # through another run's block: nothing this process can add
        return (f"the Neon-shaped test host names do not resolve to 127.0.0.1: add this line to "
                f"{hosts_file} (the tests add it themselves when run as root): {line}")
    text = without_blocks(text, lambda who: who == mine)
    if not permanent and hosts_file not in _added:
        _added[hosts_file] = text.endswith("\n") or not text
        if not _at_exit:
            _at_exit.append(atexit.register(restore))  # also after an uncaught exception
    if text and not text.endswith("\n"):
        text += "\n"
    write(hosts_file, text + hosts_block(names, mine))
    still = unresolved(names)
    if still:
        return (f"{', '.join(still)} still do not resolve to 127.0.0.1 after adding them to "
                f"{hosts_file}: check the 'hosts:' line of /etc/nsswitch.conf (files first)")
    return None


_added: dict[Path, bool] = {}  # hosts files ensure() wrote to: did each end in a line break?
_at_exit: list[object] = []  # restore() is registered with atexit (once)


def without_block(text: str) -> str:
    """``text`` without this process's block (everything else kept as it is)."""
    mine = owner()
    return without_blocks(text, lambda who: who == mine)


def restore() -> None:
    """Take this process's block out of every hosts file ``ensure()`` added it to: the file as
    it was (other runs' blocks, if any, stay)."""
    for hosts_file, ended_in_newline in list(_added.items()):
        del _added[hosts_file]
        try:
            text = hosts_file.read_text()
        except FileNotFoundError:
            continue
        kept = without_block(text)
        if kept == text:
            continue
        if not ended_in_newline and kept.endswith("\n"):
            kept = kept[:-1]
        write(hosts_file, kept)
