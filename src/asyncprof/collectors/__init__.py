"""Collectors: start the processes that produce a run's raw files (server, Locust, py-spy)."""
