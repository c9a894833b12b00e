"""model-router actors and the pure logic they wrap.

Each actor module exposes ``async def run(..., *, task_status)`` and is started by
``app.py`` with ``nursery.start``; pure modules (rules, features, statistics) hold no I/O.
"""
