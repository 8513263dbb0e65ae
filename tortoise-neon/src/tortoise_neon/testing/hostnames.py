"""Neon-shaped host names for the tests, resolving to this machine.

The client treats ``*.neon.tech`` hosts as Neon (the pooled ``-pooler`` host, the endpoint in
the first label), and Neon's proxy reads the endpoint from the TLS SNI host name: so the tests
connect to the Neon-faithful proxy through names of Neon's own shape, which must resolve to
127.0.0.1. As root (CI), ``ensure()`` adds them to /etc/hosts inside a marked block (idempotent),
and ``restore()`` (at the end of the session: conftest.py) takes that block out again, leaving
the file as it was; otherwise it says which line to add.
"""

from __future__ import annotations

import os
import socket
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


def hosts_block(names: tuple[str, ...] = NAMES) -> str:
    return f"{BEGIN}\n127.0.0.1 {' '.join(names)}\n{END}\n"


def ensure(names: tuple[str, ...] = NAMES, hosts_file: Path = HOSTS_FILE) -> str | None:
    """Make ``names`` resolve to 127.0.0.1: None when they do, else the reason they do not."""
    if not unresolved(names):
        return None
    line = f"127.0.0.1 {' '.join(names)}"
    if not (hasattr(os, "geteuid") and os.geteuid() == 0):
        return (f"the Neon-shaped test host names do not resolve to 127.0.0.1: add this line to "
                f"{hosts_file} (the tests add it themselves when run as root): {line}")
    text = hosts_file.read_text() if hosts_file.exists() else ""
    text = without_block(text)
    _added.setdefault(hosts_file, text.endswith("\n") or not text)
    if text and not text.endswith("\n"):
        text += "\n"
    hosts_file.write_text(text + hosts_block(names))  # in place: /etc/hosts may be a mount
    still = unresolved(names)
    if still:
        return (f"{', '.join(still)} still do not resolve to 127.0.0.1 after adding them to "
                f"{hosts_file}: check the 'hosts:' line of /etc/nsswitch.conf (files first)")
    return None


_added: dict[Path, bool] = {}  # hosts files ensure() wrote to: did each end in a line break?


def without_block(text: str) -> str:
    """``text`` without our marked block (everything else kept as it is)."""
    if BEGIN in text and END in text:
        head, _, rest = text.partition(BEGIN)
        text = head + rest.partition(END)[2].lstrip("\n")
    return text


def restore() -> None:
    """Take our block out of every hosts file ``ensure()`` added it to: the file as it was."""
    for hosts_file, ended_in_newline in list(_added.items()):
        text = without_block(hosts_file.read_text())
        if not ended_in_newline and text.endswith("\n"):
            text = text[:-1]
        hosts_file.write_text(text)
        del _added[hosts_file]
