import os
import stat
from pathlib import Path

import pytest

from asyncprof.errors import CorruptRunError, RunNotFoundError
from asyncprof.renderers.speedscope import collapsed_to_speedscope
from asyncprof.run import Run, iter_runs, resolve_run


def test_create_save_load_and_resolve(tmp_path: Path) -> None:
    a = Run.create(tmp_path, "sync-seed")
    a.update(config={"mode": "sync"})
    b = Run.create(tmp_path, "async-seed")
    assert stat.S_IMODE(os.stat(a.path).st_mode) == 0o700
    assert Run.load(a.path).manifest["config"] == {"mode": "sync"}
    assert resolve_run(None, tmp_path).run_id == max(a.run_id, b.run_id)
    assert resolve_run(a.run_id, tmp_path).path == a.path
    assert resolve_run(str(b.path), tmp_path).run_id == b.run_id
    assert {r.run_id for r in iter_runs(tmp_path)} == {a.run_id, b.run_id}


def test_missing_and_corrupt_runs_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(RunNotFoundError):
        resolve_run(None, tmp_path)
    with pytest.raises(RunNotFoundError):
        resolve_run("no-such-run", tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "manifest.json").write_text("{not json")
    with pytest.raises(CorruptRunError):
        Run.load(bad)
    assert list(iter_runs(tmp_path)) == []


def test_speedscope_weights_equal_sample_counts(tmp_path: Path) -> None:
    path = tmp_path / "s.txt"
    path.write_text('process 5:"x";thread (1): Main;a (m.py:1);b (m.py:2) 3\nprocess 5:"x";thread (1): Main;a (m.py:1) 2\n')
    doc = collapsed_to_speedscope(path, "t")
    (profile,) = doc["profiles"]
    assert profile["weights"] == [3, 2] and profile["endValue"] == 5
    names = [doc["shared"]["frames"][i]["name"] for i in profile["samples"][0]]
    assert names == ["a", "b"]
