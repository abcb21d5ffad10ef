"""The seed page in every flavour: list 20 items, then one item's details, as JSON.

``seed`` views use raw SQL (psycopg2 / asyncpg), as in the forum thread;
``orm`` views do the same through the Django ORM (sync API / async API);
``page`` views fetch as ``seed`` does and render an HTML template, as the seed
author's sites do; ``cpu`` views do a fixed amount of pure-Python work and no I/O.
"""

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from asyncprof_target import queries
from asyncprof_target.connections import async_connection, sync_connection
from asyncprof_target.models import Item


def health(request: HttpRequest) -> JsonResponse:
    """Readiness probe: answers without touching the database."""
    return JsonResponse({"ok": True})


def _fetch_sync() -> dict:
    item_id = queries.random_item_id()
    with sync_connection() as conn, conn.cursor() as cur:
        cur.execute(queries.LIST_SQL)
        items = [dict(zip(queries.LIST_FIELDS, row)) for row in cur.fetchall()]
        cur.execute(queries.DETAIL_SQL_PSYCOPG, (item_id,))
        row = cur.fetchone()
    return {"items": items, "detail": dict(zip(queries.DETAIL_FIELDS, row)) if row else None}


async def _fetch_async() -> dict:
    item_id = queries.random_item_id()
    async with async_connection() as conn:
        rows = await conn.fetch(queries.LIST_SQL)
        row = await conn.fetchrow(queries.DETAIL_SQL_ASYNCPG, item_id)
    return {"items": [dict(r) for r in rows], "detail": dict(row) if row else None}


def seed_sync(request: HttpRequest) -> JsonResponse:
    return JsonResponse(_fetch_sync())


async def seed_async(request: HttpRequest) -> JsonResponse:
    return JsonResponse(await _fetch_async())


def page_sync(request: HttpRequest) -> HttpResponse:
    return render(request, "asyncprof_target/page.html", _fetch_sync())


async def page_async(request: HttpRequest) -> HttpResponse:
    # Template rendering is synchronous CPU work; calling it directly keeps it on the loop,
    # which is what an async view that renders a page does.
    return render(request, "asyncprof_target/page.html", await _fetch_async())


def _cpu_work() -> int:
    """A fixed amount of pure-Python work (about 10 ms of CPU on a 2026 laptop core): no I/O, no database."""
    return sum(i * i % 7 for i in range(CPU_WORK_ITERATIONS))


CPU_WORK_ITERATIONS = 100_000


def cpu_sync(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"result": _cpu_work()})


async def cpu_async(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"result": _cpu_work()})


def orm_sync(request: HttpRequest) -> JsonResponse:
    item_id = queries.random_item_id()
    items = list(Item.objects.order_by("id").values(*queries.LIST_FIELDS)[:20])
    detail = Item.objects.values(*queries.DETAIL_FIELDS).filter(pk=item_id).first()
    return JsonResponse({"items": items, "detail": detail})


async def orm_async(request: HttpRequest) -> JsonResponse:
    item_id = queries.random_item_id()
    items = [i async for i in Item.objects.order_by("id").values(*queries.LIST_FIELDS)[:20]]
    detail = await Item.objects.values(*queries.DETAIL_FIELDS).filter(pk=item_id).afirst()
    return JsonResponse({"items": items, "detail": detail})
