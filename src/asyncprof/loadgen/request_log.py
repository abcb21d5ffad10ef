"""The request log's format, shared by the Locust processes (which write it) and asyncprof (which reads it).

Kept free of imports so both sides can use it: the Locust side runs under gevent's patches.
"""

#: Columns of ``requests.tsv``; ``lag_ms`` is empty in closed-loop runs and absent in older runs.
#: ``span_id`` (the client span's id, the parent id of the ``traceparent`` sent) and ``sampled``
#: (``1``/``0``: the trace's sampled flag) are absent in older runs: their traces were all sampled.
REQUEST_LOG_HEADER = "start\tname\tstatus\tlatency_ms\tbytes\ttrace_id\terror\tlag_ms\tspan_id\tsampled\n"
