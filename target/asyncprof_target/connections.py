"""The recorded connection policy for the raw-SQL views.

``ASYNCPROF_CONNECT=persistent`` (the default): a sync worker keeps one
psycopg2 connection per thread for its whole life; an async worker keeps one
asyncpg pool of ``ASYNCPROF_POOL_SIZE`` connections.  ``per-request``
reproduces the naive setup of opening (and closing) a connection in every
request, which is what the report's db_connect category is about.

An async view under a WSGI server (``--view async`` with a WSGI mode) runs in
a new event loop for every request (Django's ``async_to_sync``), and an
asyncpg pool belongs to the loop that made it: there, every request opens its
own connection whatever the policy.
"""

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import asyncpg
import psycopg2
import psycopg2.extensions

DSN = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PER_REQUEST = os.environ.get("ASYNCPROF_CONNECT", "persistent") == "per-request"
#: Under WSGI an async view's loop lives for one request only (see the module docstring).
LOOP_PER_REQUEST = os.environ.get("ASYNCPROF_INTERFACE") == "wsgi"
POOL_SIZE = int(os.environ.get("ASYNCPROF_POOL_SIZE", "10"))

_local = threading.local()
_pool: asyncpg.Pool | None = None
_pool_lock: asyncio.Lock | None = None


def _connect_sync() -> psycopg2.extensions.connection:
    conn = psycopg2.connect(DSN)
    conn.autocommit = True  # two reads: a transaction would only add round trips
    return conn


@contextmanager
def sync_connection() -> Iterator[psycopg2.extensions.connection]:
    """Yield a psycopg2 connection according to the policy."""
    if PER_REQUEST:
        conn = _connect_sync()
        try:
            yield conn
        finally:
            conn.close()
        return
    conn = getattr(_local, "conn", None)
    if conn is None or conn.closed:
        conn = _local.conn = _connect_sync()
    yield conn


async def _get_pool() -> asyncpg.Pool:
    global _pool, _pool_lock
    if _pool is not None:
        return _pool
    if _pool_lock is None:
        _pool_lock = asyncio.Lock()
    async with _pool_lock:
        if _pool is None:
            _pool = await asyncpg.create_pool(DSN, min_size=1, max_size=POOL_SIZE)
    return _pool


@asynccontextmanager
async def async_connection() -> AsyncIterator[asyncpg.Connection]:
    """Yield an asyncpg connection according to the policy."""
    if PER_REQUEST or LOOP_PER_REQUEST:
        conn = await asyncpg.connect(DSN)
        try:
            yield conn
        finally:
            await conn.close()
        return
    pool = await _get_pool()
    async with pool.acquire() as conn:
        yield conn
