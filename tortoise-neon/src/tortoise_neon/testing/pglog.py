"""What the PostgreSQL server log says about one database's sessions.

The test server logs connections and disconnections (``log_connections``,
``log_disconnections``); ``ALTER DATABASE ... SET log_statement = 'all'`` adds one entry per
statement executed in that database: ``statement: ...`` for the simple-query protocol and
``execute <name>: ...`` for each Execute of the extended protocol (Parse and Describe are not
logged). Entries carry the backend's pid (the default ``log_line_prefix`` is ``'%m [%p] '``),
which ties them to a session through its ``connection authorized:`` entry.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

ENTRY = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)? \S+ \[(\d+)\] ([A-Z0-9]+):  (.*)$")
AUTHORIZED = re.compile(r"connection authorized: user=(\S+) database=(\S+)")
# what a well-behaved session logs; anything else (an error, "could not receive data from
# client", "unexpected EOF on client connection", an SSL error...) is a problem
NORMAL = ("connection received:", "connection authenticated:", "connection authorized:",
          "statement: ", "execute ", "disconnection:")


@dataclass
class Session:
    pid: int
    user: str = ""
    database: str = ""
    entries: list[tuple[str, str]] = field(default_factory=list)  # (level, message)

    @property
    def statements(self) -> list[str]:
        return [m for lvl, m in self.entries
                if lvl == "LOG" and m.startswith(("statement: ", "execute "))]

    @property
    def disconnected(self) -> bool:
        return any(m.startswith("disconnection:") for _, m in self.entries)

    @property
    def problems(self) -> list[str]:
        return [f"{lvl}: {m}" for lvl, m in self.entries
                if not (lvl == "LOG" and m.startswith(NORMAL))
                and not (lvl == "DETAIL" and m.lower().startswith("parameters:"))]  # 17+: P


def parse(text: str) -> dict[int, Session]:
    """Every session in a stretch of log text, by pid."""
    sessions: dict[int, Session] = {}
    current: Session | None = None
    for line in text.splitlines():
        match = ENTRY.match(line)
        if not match:
            if current is not None and current.entries:  # a statement's next lines
                level, message = current.entries[-1]
                current.entries[-1] = (level, message + "\n" + line)
            continue
        pid = int(match.group(1))
        current = sessions.setdefault(pid, Session(pid))
        current.entries.append((match.group(2), match.group(3)))
        if authorized := AUTHORIZED.match(match.group(3)):
            current.user, current.database = authorized.group(1), authorized.group(2)
    return sessions


def log_size(logfile: Path) -> int:
    return logfile.stat().st_size


def read_since(logfile: Path, offset: int) -> str:
    with open(logfile, "rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def sessions_of(logfile: Path, offset: int, database: str, user: str,
                timeout: float = 10.0) -> list[Session]:
    """The sessions of ``user`` in ``database`` logged after ``offset``, once all have ended.

    A backend logs its disconnection just after the client has gone, so wait for it (up to
    ``timeout``); sessions still connected then are returned as they are.
    """
    deadline = time.monotonic() + timeout
    while True:
        found = [s for s in parse(read_since(logfile, offset)).values()
                 if s.database == database and s.user == user]
        if all(s.disconnected for s in found) or time.monotonic() > deadline:
            return found
        time.sleep(0.02)
