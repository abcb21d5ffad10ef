"""The format of the in-worker accounting files: the contract between the workers and the analysis.

Each worker appends to ``accounting/<pid>.tsv`` in the run directory: a header line
(``COLUMNS`` joined by tabs), then one line per finished request.  New columns are added at the
end; readers find columns by the header, and count a column an older file lacks as 0.  Durations are integer
microseconds of the worker's own clocks; the server-side categories of one line never sum to
more than ``wall_us`` by construction except for clock jitter of a few microseconds, and what
they leave of ``wall_us`` is the server's part of ``other``.

Columns:

``trace_id``
    32 lowercase hex digits from the request's W3C ``traceparent`` header (Locust sends one with
    every request), empty when the request had none.
``start_unix``
    When the worker took the request (the request's task was created under ASGI; the WSGI
    application was called under WSGI), as Unix seconds with microseconds.
``name``
    The request path.
``wall_us``
    From ``start_unix`` to the last byte of the response body handed to the server.
``cpu_us``
    On-CPU time of this request's own code: its task steps on the loop thread (ASGI) or its
    thread (WSGI), plus its code inside thread hops.
``db_wait_us``
    Waiting for PostgreSQL to answer queries (driver CPU excluded: it is in ``cpu_us``).
``db_connect_us``
    Getting a connection: opening one, or waiting for a free one in a pool (``pool_wait_us`` is
    the pool-wait part of it).
``event_loop_us``
    ASGI: the request's task was ready to run while the loop ran something else.
``thread_hop_us``
    ASGI: crossing sync<->async (dispatch to the executor, thread start, queue wait, the result's
    way back to the loop) minus the hop's own code, which is split into the other columns.
``gil_wait_us``
    Off-CPU while running, not waiting for the database, not in a known blocking call and not
    in the OS run queue: waiting to (re)take the GIL, or blocking I/O asyncprof does not hook.
``os_run_queue_us``
    Runnable but not on a CPU (``/proc/thread-self/schedstat`` run delay) while running or while
    ready.
``blocking_us``
    Blocked in ``time.sleep`` (in an async view this also blocks the whole loop).
``hops``
    Number of sync<->async crossings (asgiref ``SyncToAsync`` calls) of this request.
``queries``
    Number of database round trips measured.
``pool_wait_us``
    Part of ``db_connect_us`` spent waiting for a pool connection.
``upstream_wait_us``
    Waiting for other HTTP services to answer (httpx's transports, sync and async): wall time in
    which at least one of the request's calls was outstanding and the request neither ran nor
    was ready to run, so concurrent calls count once (client CPU excluded: it is in ``cpu_us``).
``upstream_calls``
    Number of upstream HTTP calls (httpx requests sent) of this request.

Besides the records, each worker writes ``accounting/<pid>.json`` (see ``WorkerSummary`` in
``asyncprof.worker.accounting``): the loop implementation, whether ready-waits were measurable,
hop call sites with counts, and the hooks' own cost.
"""

COLUMNS: tuple[str, ...] = (
    "trace_id",
    "start_unix",
    "name",
    "wall_us",
    "cpu_us",
    "db_wait_us",
    "db_connect_us",
    "event_loop_us",
    "thread_hop_us",
    "gil_wait_us",
    "os_run_queue_us",
    "blocking_us",
    "hops",
    "queries",
    "pool_wait_us",
    "upstream_wait_us",
    "upstream_calls",
)

#: The server-side duration columns that split ``wall_us`` (in report order).
SERVER_CATEGORIES: tuple[str, ...] = (
    "cpu",
    "db_wait",
    "db_connect",
    "upstream_wait",
    "event_loop",
    "thread_hop",
    "gil_wait",
    "os_run_queue",
    "blocking",
)

ACCOUNTING_DIR = "accounting"
