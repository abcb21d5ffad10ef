"""The seed page's two queries, shared by every view so all flavours do the same work."""

import os
import random

LIST_SQL = "SELECT id, name, price FROM item ORDER BY id LIMIT 20"
DETAIL_SQL_PSYCOPG = "SELECT id, name, description, price, created FROM item WHERE id = %s"
DETAIL_SQL_ASYNCPG = "SELECT id, name, description, price, created FROM item WHERE id = $1"
LIST_FIELDS = ("id", "name", "price")
DETAIL_FIELDS = ("id", "name", "description", "price", "created")

ROWS = int(os.environ.get("ASYNCPROF_ROWS", "10000"))


def random_item_id() -> int:
    """Pick the detail row: uniform over the seeded ids, like a visitor clicking any item."""
    return random.randint(1, ROWS)
