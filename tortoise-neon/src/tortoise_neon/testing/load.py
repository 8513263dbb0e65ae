"""Load on an app for the tests and the bench: round trips per request, bursts of clients.

A POST sends ``{"name": ...}``: the resources of the library's app (``/members``) and the
template's (``/users``) both take one.
"""

from __future__ import annotations

import collections
import threading
import time
import uuid
from dataclasses import dataclass

from tortoise_neon.testing.proxy import ProxyThread

import httpx


@dataclass(frozen=True)
class Counted:
    round_trips: float  # per request
    opened: int  # connections opened during the count (their handshakes are in round_trips)
    failed: int  # answers other than 2xx, and requests without an answer


def round_trips_per_request(api: httpx.Client, proxy: ProxyThread, method: str, path: str,
                            count: int = 20) -> Counted | None:
    """Round trips per request for ``count`` calls, one at a time, after three warm-up calls;
    None when the app has no such endpoint."""

    def call() -> int:
        body = {"name": f"bench {uuid.uuid4().hex[:8]}"} if method == "POST" else None
        try:
            return api.request(method, path, json=body).status_code
        except httpx.HTTPError:
            return 0

    for _ in range(3):
        if call() == 404:
            return None
    time.sleep(0.2)  # let the warm-up's last replies reach the counter
    traces = list(proxy.proxy.traces)
    before = sum(t.round_trips for t in traces)
    failed = sum(not 200 <= call() < 300 for _ in range(count))
    time.sleep(0.2)
    now = list(proxy.proxy.traces)
    after = sum(t.round_trips for t in now)
    return Counted((after - before) / count, len(now) - len(traces), failed)


def burst(api: httpx.Client, resource: str, clients: int = 8, each: int = 10
          ) -> collections.Counter[int]:
    """Concurrent requests first: they spread over the pooler's server connections, where a
    pooler that cannot keep prepared statements fails them (and the app turns its cache off)."""
    statuses: collections.Counter[int] = collections.Counter()

    def client() -> None:
        with httpx.Client(base_url=str(api.base_url), timeout=60) as own:
            for i in range(each):
                try:
                    if i % 2:
                        statuses[own.get(resource).status_code] += 1
                    else:
                        statuses[own.post(resource, json={"name": "burst"}).status_code] += 1
                except httpx.HTTPError:
                    statuses[0] += 1  # no answer

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return statuses


def steady(base: str, resource: str, clients: int = 24, seconds: float = 6.0
           ) -> list[tuple[str, float]]:
    """``clients`` clients, each sending GETs and, one request in three, a POST to
    ``resource`` for ``seconds``: each answer (its status, or the client's error when there
    was none) and how long it took. Each request on a new TCP connection, as from many
    browsers: under ``uvicorn --workers N`` each is accepted by whichever worker is free, so
    the load spreads over the workers (kept-alive connections could all land on one)."""
    results: list[tuple[str, float]] = []
    stop = time.monotonic() + seconds

    def client(number: int) -> None:
        fresh = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(base_url=base, timeout=60, limits=fresh) as own:
            i = 0
            while time.monotonic() < stop:
                began = time.monotonic()
                try:
                    if i % 3:
                        answer = str(own.get(resource).status_code)
                    else:
                        answer = str(own.post(resource, json={"name": f"c{number}"}).status_code)
                except httpx.HTTPError as exc:
                    answer = f"{type(exc).__name__}: {exc}"
                results.append((answer, time.monotonic() - began))
                i += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 120)
    return results
