"""Code that runs inside the measured workers.

Everything in this subpackage is part of what asyncprof measures, so it is
kept small and cheap: configuration is read once from the environment (see
:mod:`asyncprof.worker.env`), per-request work is a counter check unless the
request is sampled, and all writing happens off the request path (OTel's batch
processor thread) or for the sampled requests only.
"""
