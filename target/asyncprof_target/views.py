"""The seed page in every flavour: list 20 items, then one item's details, as JSON.

``seed`` views use raw SQL (psycopg2 / asyncpg), as in the forum thread;
``orm`` views do the same through the Django ORM (sync API / async API).
"""

from django.http import HttpRequest, JsonResponse

from asyncprof_target import queries
from asyncprof_target.connections import async_connection, sync_connection
from asyncprof_target.models import Item


def health(request: HttpRequest) -> JsonResponse:
    """Readiness probe: answers without touching the database."""
    return JsonResponse({"ok": True})


def seed_sync(request: HttpRequest) -> JsonResponse:
    item_id = queries.random_item_id()
    with sync_connection() as conn, conn.cursor() as cur:
        cur.execute(queries.LIST_SQL)
        items = [dict(zip(queries.LIST_FIELDS, row)) for row in cur.fetchall()]
        cur.execute(queries.DETAIL_SQL_PSYCOPG, (item_id,))
        row = cur.fetchone()
    detail = dict(zip(queries.DETAIL_FIELDS, row)) if row else None
    return JsonResponse({"items": items, "detail": detail})


async def seed_async(request: HttpRequest) -> JsonResponse:
    item_id = queries.random_item_id()
    async with async_connection() as conn:
        rows = await conn.fetch(queries.LIST_SQL)
        row = await conn.fetchrow(queries.DETAIL_SQL_ASYNCPG, item_id)
    items = [dict(r) for r in rows]
    detail = dict(row) if row else None
    return JsonResponse({"items": items, "detail": detail})


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
