"""The calibration views: a request of known cost, in a sync and an async flavour.

``ASYNCPROF_CALIBRATE="cpu_ms=A,db_ms=B,block_ms=C,hops=D"`` (set by
``asyncprof record --scenario calibrate``; missing keys, or no variable at
all, mean 0) is read once, at import.  Every request then does, in order:

1. **cpu** -- burns exactly A ms of *this thread's* CPU (a busy loop timed
   with :func:`time.thread_time`, so preemption does not shorten it);
2. **db** -- waits B ms inside PostgreSQL (``SELECT pg_sleep(B/1000)``)
   through the seed views' connection policy (:func:`sync_connection` /
   :func:`async_connection`); skipped when B is 0;
3. **block** -- blocks its thread C ms with :func:`time.sleep` (in the async
   view this deliberately blocks the event loop); skipped when C is 0;
4. **hops** -- crosses sync<->async D times: the async view awaits
   ``sync_to_async(noop, thread_sensitive=True)()``, the sync view calls
   ``async_to_sync(async_noop)()``;

and answers a small JSON object with the calibration it applied.

This module must not import asyncprof (the target is measured on its own);
its parser accepts what :func:`asyncprof.calibration.parse_calibration`
accepts, and asyncprof validates the text before any worker starts.
"""

import math
import os
import time
from dataclasses import asdict, dataclass

from asgiref.sync import async_to_sync, sync_to_async
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, JsonResponse

from asyncprof_target.connections import async_connection, sync_connection

ENV_VAR = "ASYNCPROF_CALIBRATE"
MS_KEYS = ("cpu_ms", "db_ms", "block_ms")
KEYS = (*MS_KEYS, "hops")
MAX_MS = 10_000.0
MAX_HOPS = 1000
PG_SLEEP_PSYCOPG = "SELECT pg_sleep(%s)"
PG_SLEEP_ASYNCPG = "SELECT pg_sleep($1)"


@dataclass(frozen=True)
class Cost:
    """One calibrate request's cost: milliseconds in ``[0, MAX_MS]``, hops in ``[0, MAX_HOPS]``."""

    cpu_ms: float = 0.0
    db_ms: float = 0.0
    block_ms: float = 0.0
    hops: int = 0


def parse(text: str) -> Cost:
    """Parse ``key=value,...`` (keys in :data:`KEYS`, each at most once, missing ones 0; empty text: all 0).

    Raises ImproperlyConfigured naming the bad item, so a worker refuses to
    start rather than serve a different cost than the one recorded.
    """
    values: dict[str, float] = {}
    if not text.strip():
        return Cost()
    for item in text.split(","):
        key, sep, raw = item.strip().partition("=")
        key, raw = key.strip(), raw.strip()
        if not sep or key not in KEYS or key in values:
            raise ImproperlyConfigured(f"{ENV_VAR}: bad item {item!r} in {text!r} (keys: {', '.join(KEYS)})")
        try:
            value = float(int(raw)) if key == "hops" else float(raw)
        except ValueError:
            raise ImproperlyConfigured(f"{ENV_VAR}: {key} is not a number: {raw!r}") from None
        high = MAX_HOPS if key == "hops" else MAX_MS
        if not math.isfinite(value) or not (0 <= value <= high):
            raise ImproperlyConfigured(f"{ENV_VAR}: {key} must be between 0 and {high:g}, not {raw}")
        values[key] = value
    return Cost(
        cpu_ms=values.get("cpu_ms", 0.0),
        db_ms=values.get("db_ms", 0.0),
        block_ms=values.get("block_ms", 0.0),
        hops=int(values.get("hops", 0)),
    )


COST = parse(os.environ.get(ENV_VAR, ""))


def burn_cpu(ms: float) -> None:
    """Busy-loop until this thread has used *ms* milliseconds of CPU (wall time is at least that)."""
    if ms <= 0:
        return
    end = time.thread_time() + ms / 1000.0
    while time.thread_time() < end:
        pass


def noop() -> None:
    """The sync side of a hop: does nothing, so a hop costs only the crossing."""


async def async_noop() -> None:
    """The async side of a hop: does nothing, so a hop costs only the crossing."""


def calibrate_sync(request: HttpRequest) -> JsonResponse:
    """The sync flavour: cpu, pg_sleep through psycopg2, time.sleep, then ``hops`` × async_to_sync."""
    cost = COST
    burn_cpu(cost.cpu_ms)
    if cost.db_ms > 0:
        with sync_connection() as conn, conn.cursor() as cur:
            cur.execute(PG_SLEEP_PSYCOPG, (cost.db_ms / 1000.0,))
            cur.fetchone()
    if cost.block_ms > 0:
        time.sleep(cost.block_ms / 1000.0)
    for _ in range(cost.hops):
        async_to_sync(async_noop)()
    return JsonResponse({"view": "sync", **asdict(cost)})


async def calibrate_async(request: HttpRequest) -> JsonResponse:
    """The async flavour: cpu, pg_sleep through asyncpg, time.sleep (blocks the loop), then ``hops`` × sync_to_async."""
    cost = COST
    burn_cpu(cost.cpu_ms)
    if cost.db_ms > 0:
        async with async_connection() as conn:
            await conn.fetchval(PG_SLEEP_ASYNCPG, cost.db_ms / 1000.0)
    if cost.block_ms > 0:
        time.sleep(cost.block_ms / 1000.0)  # deliberately blocks the event loop
    for _ in range(cost.hops):
        await sync_to_async(noop, thread_sensitive=True)()
    return JsonResponse({"view": "async", **asdict(cost)})
