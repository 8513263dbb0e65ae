"""main.py's work written by hand with plain asyncpg: the baseline for .ci/bench/roundtrips.py.

What a careful developer writes without an ORM: connect with TLS verified (direct TLS if the
URL says sslnegotiation=direct), create the table if needed, insert a user, list the newest 10
with the total count in one query, close.
Run: DATABASE_URL=postgresql://... python .ci/bench/plain_asyncpg.py
"""

from __future__ import annotations

import asyncio
import os
import ssl
import sys
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import asyncpg

CREATE = """CREATE TABLE IF NOT EXISTS demo_users (
    id serial PRIMARY KEY,
    name varchar(50) NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
)"""
# created_at given explicitly: the table main.py creates has no DEFAULT for it
INSERT = "INSERT INTO demo_users (name, created_at) VALUES ($1, now()) RETURNING id, name"
NEWEST = """SELECT id, name, created_at, (SELECT count(*) FROM demo_users) AS total
FROM demo_users ORDER BY id DESC LIMIT 10"""


async def main(url: str, name: str) -> None:
    parts = urlsplit(url)
    params = dict(parse_qsl(parts.query))
    # verify the chain and the host name (SSL_CERT_FILE names the CA, as for main.py)
    tls = ssl.create_default_context()
    direct = params.get("sslnegotiation") == "direct"
    if direct:
        tls.set_alpn_protocols(["postgresql"])  # PostgreSQL 17+ requires it for direct TLS
    conn = await asyncpg.connect(urlunsplit(parts._replace(query="")), direct_tls=direct,
                                 ssl=False if params.get("sslmode") == "disable" else tls)
    try:
        await conn.execute(CREATE)
        user = await conn.fetchrow(INSERT, name)
        print(f"Inserted user #{user['id']}: {user['name']}")
        newest = await conn.fetch(NEWEST)
        print(f"{newest[0]['total']} users in total; newest {len(newest)}:")
        for u in newest:
            print(f"  #{u['id']} {u['name']} (added {u['created_at']:%Y-%m-%d %H:%M:%S} UTC)")
    finally:
        await conn.close()


if __name__ == "__main__":
    database_url = os.environ.get("DATABASE_URL")
    if not database_url:
        sys.exit("DATABASE_URL is not set")
    asyncio.run(main(database_url, "Neon User"))
