"""The Django project asyncprof measures: the forum thread's two-query page.

The same page exists as a sync view (psycopg2, or the sync ORM) and as an
async view (asyncpg, or the async ORM API), so one project serves every
worker mode.  Nothing here knows about asyncprof's instruments: they are
added from outside, by the worker hooks, exactly as for a user's own project.
"""
