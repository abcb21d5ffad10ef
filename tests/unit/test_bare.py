"""``record --bare``: the baseline of the overhead benchmark runs with no instrument at all."""

from typing import Any

import pytest

from asyncprof import cli, recorder


class _Stop(Exception):
    pass


def _config_of(monkeypatch: pytest.MonkeyPatch, *argv: str) -> Any:
    seen: list[Any] = []

    def fake_record(config: Any, **_: Any) -> None:
        seen.append(config)
        raise _Stop  # the run itself is not this test's business

    monkeypatch.setattr(recorder, "record", fake_record)
    cli.main(["record", "--mode", "sync", *argv])
    assert len(seen) == 1
    return seen[0]


def test_bare_turns_every_instrument_off(monkeypatch: pytest.MonkeyPatch) -> None:
    c = _config_of(monkeypatch, "--bare")
    assert (c.pyspy, c.otel, c.pyinstrument, c.accounting) == (False, False, False, False)


def test_default_has_every_instrument_on(monkeypatch: pytest.MonkeyPatch) -> None:
    c = _config_of(monkeypatch)
    assert (c.pyspy, c.otel, c.pyinstrument, c.accounting) == (True, True, True, True)
