"""The scenario registry: what the load generator requests from the target.

A scenario names the endpoints for each view flavour (``sync``/``async``) as
``(endpoint name, path, weight)``; the endpoint name is what reports show.
A scenario with ``needs_upstream`` gets an upstream HTTP service from the recorder
(:mod:`asyncprof.upstream`, its URL in the workers' ``ASYNCPROF_UPSTREAM_URL``).
"""

from dataclasses import dataclass

from asyncprof.errors import UsageError

Endpoint = tuple[str, str, int]


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    endpoints: dict[str, tuple[Endpoint, ...]]
    #: The views call the upstream HTTP service asyncprof starts (``asyncprof.upstream``).
    needs_upstream: bool = False

    def endpoints_for(self, view: str) -> tuple[Endpoint, ...]:
        try:
            return self.endpoints[view]
        except KeyError:
            raise UsageError(
                f"scenario {self.name!r} has no {view} view", f"views: {', '.join(self.endpoints)}"
            ) from None


SCENARIOS: dict[str, Scenario] = {}


def register(scenario: Scenario) -> Scenario:
    SCENARIOS[scenario.name] = scenario
    return scenario


def get_scenario(name: str) -> Scenario:
    """Return the scenario called *name*, or raise UsageError listing the known ones."""
    try:
        return SCENARIOS[name]
    except KeyError:
        raise UsageError(f"unknown scenario {name!r}", f"known scenarios: {', '.join(sorted(SCENARIOS))}") from None


def _per_flavour(name: str) -> dict[str, tuple[Endpoint, ...]]:
    return {view: ((f"{view}/{name}", f"/{view}/{name}/", 1),) for view in ("sync", "async")}


register(
    Scenario(
        "seed",
        "the forum thread's page: list 20 items, then one item's details, raw SQL (psycopg2 / asyncpg)",
        _per_flavour("seed"),
    )
)
register(
    Scenario(
        "orm",
        "the same page through the Django ORM (sync API / async API)",
        _per_flavour("orm"),
    )
)
register(
    Scenario(
        "page",
        "the seed page's two raw-SQL queries rendered through a Django template as HTML",
        _per_flavour("page"),
    )
)
register(
    Scenario(
        "cpu",
        "a CPU-bound view: a fixed amount of pure-Python work, no database",
        _per_flavour("cpu"),
    )
)
register(
    Scenario(
        "calibrate",
        "a request of known cost, set by --calibrate cpu_ms=A,db_ms=B,block_ms=C,hops=D: A ms of CPU, "
        "B ms in pg_sleep, C ms of blocking time.sleep, D sync<->async crossings (default all 0)",
        _per_flavour("calibrate"),
    )
)
register(
    Scenario(
        "fanout",
        "3 calls to an upstream HTTP service asyncprof starts on loopback, each answered after "
        "--upstream-delay-ms (default 20): one after another with httpx.Client in the sync view, "
        "at once (asyncio.gather) with httpx.AsyncClient in the async view; no database",
        _per_flavour("fanout"),
        needs_upstream=True,
    )
)
