"""Analysis: pure functions from a run's files to numbers (no printing, no processes)."""
