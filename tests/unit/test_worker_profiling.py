"""The profiling middleware: one request in N profiled, from a random phase, deferred to the next
request in the sample, saved by trace id; under ASGI during the request task's steps only."""

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pyinstrument.session import Session

from asyncprof.worker import loop_hooks, profiling


@pytest.fixture
def every_10(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setattr(profiling, "_EVERY", 10)
    monkeypatch.setattr(profiling, "_DIR", tmp_path)
    return tmp_path


def request(i: int, in_sample: bool = True) -> Any:
    return SimpleNamespace(META={"HTTP_TRACEPARENT": f"00-{i + 1:032x}-{1:016x}-{'01' if in_sample else '00'}"})


def view(request: Any) -> str:
    return sum(range(1000)) and "ok"


def profiled_indices(directory: Path) -> list[int]:
    return sorted(int(p.stem, 16) - 1 for p in directory.glob("*.pyisession"))


def test_one_in_n_from_a_random_phase(every_10: Path) -> None:
    random.seed(3)
    middleware = profiling.profile_middleware(view)
    assert all(middleware(request(i)) == "ok" for i in range(100))
    indices = profiled_indices(every_10)
    assert len(indices) == 10
    assert {b - a for a, b in zip(indices, indices[1:])} == {10}
    # Worker after worker, the first profile is not always the Nth request: short runs get their share.
    firsts = set()
    for seed in range(20):
        random.seed(seed)
        for p in every_10.glob("*.pyisession"):
            p.unlink()
        middleware = profiling.profile_middleware(view)
        for i in range(10):
            middleware(request(i))
        firsts.update(profiled_indices(every_10))
    assert len(firsts) >= 5


def test_the_profile_goes_to_the_next_request_in_the_sample(every_10: Path) -> None:
    middleware = profiling.profile_middleware(view)
    in_sample = [i % 7 == 0 for i in range(200)]  # one in 7 in the sample
    for i in range(200):
        middleware(request(i, in_sample[i]))
    indices = profiled_indices(every_10)
    assert indices and all(in_sample[i] for i in indices)
    assert 15 <= len(indices) <= 20  # one per 10 requests, each waiting at most 7 for a sampled one


@pytest.fixture
def timed_loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    assert loop_hooks.install(loop)
    yield loop
    loop.close()


def burn_in_the_profiled_request() -> int:
    return sum(i * i for i in range(20_000))


def burn_beside_it() -> int:
    return sum(i * i for i in range(20_000))


def frame_names(path: Path) -> set[str]:
    root = Session.load(path).root_frame()
    names, todo = set(), [root]
    while todo:
        frame = todo.pop()
        if frame is not None:
            names.add(frame.function)
            todo.extend(frame.children)
    return names


def serve_beside_a_neighbour(loop: asyncio.AbstractEventLoop, every_10: Path) -> set[str]:
    """Profile one request of a request task while another task burns CPU on the same loop."""
    async def async_view(request: Any) -> str:
        for _ in range(5):
            burn_in_the_profiled_request()
            await asyncio.sleep(0.001)
        return "ok"

    middleware = profiling.profile_middleware(async_view)

    async def neighbour() -> None:
        for _ in range(20):
            burn_beside_it()
            await asyncio.sleep(0)

    async def request_task(i: int) -> str:
        return await middleware(request(i))

    async def serve() -> list[str]:
        beside = loop.create_task(neighbour())
        results = [await loop.create_task(request_task(i)) for i in range(10)]  # one of them profiled
        await beside
        return results

    assert loop.run_until_complete(serve()) == ["ok"] * 10
    (path,) = every_10.glob("*.pyisession")
    return frame_names(path)


def test_asgi_profile_runs_during_the_request_tasks_steps_only(
        timed_loop: asyncio.AbstractEventLoop, every_10: Path) -> None:
    names = serve_beside_a_neighbour(timed_loop, every_10)
    assert "burn_in_the_profiled_request" in names
    assert "burn_beside_it" not in names
    # Not running across the awaits, while the neighbour ran: its own steps only.
    assert "[await]" not in names
    assert not any(task.get_coro().profiler for task in asyncio.all_tasks(timed_loop)
                   if isinstance(task.get_coro(), loop_hooks.TimedCoroutine))


def test_asgi_profile_without_loop_hooks_follows_the_request_across_awaits(every_10: Path) -> None:
    loop = asyncio.new_event_loop()  # no task factory: the request's task is not timed
    try:
        names = serve_beside_a_neighbour(loop, every_10)
    finally:
        loop.close()
    assert "burn_in_the_profiled_request" in names
    assert "[await]" in names  # pyinstrument's async mode: the awaits are in the profile
