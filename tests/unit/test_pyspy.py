from pathlib import Path

from asyncprof.collectors.pyspy import PTRACE_HINT, failure_reason


def test_permission_failure_names_the_fix(tmp_path: Path) -> None:
    log = tmp_path / "pyspy.log"
    log.write_text("Error: Failed to attach to process 123: Operation not permitted (os error 1)\n"
                   "Permission Denied: Try running again with elevated permissions\n")
    reason = failure_reason(log)
    assert "Error: Failed to attach" in reason
    assert PTRACE_HINT in reason


def test_missing_log_is_said(tmp_path: Path) -> None:
    assert "no log" in failure_reason(tmp_path / "absent.log")
