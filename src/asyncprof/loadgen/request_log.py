"""The request log's format, shared by the Locust processes (which write it) and asyncprof (which reads it).

Kept free of imports so both sides can use it: the Locust side runs under gevent's patches.
"""

#: Columns of ``requests.tsv``; ``lag_ms`` is empty in closed-loop runs and absent in older runs.
REQUEST_LOG_HEADER = "start\tname\tstatus\tlatency_ms\tbytes\ttrace_id\terror\tlag_ms\n"
