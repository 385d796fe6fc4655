"""Durable jobs: the `JobQueue` port and its two engines (DESIGN.md §2).

- embedded: SQLite + an in-process dispatcher (`embedded.py`; its loop in
  `embedded_worker.py`), inside `cauce serve`;
- scale-out: PostgreSQL + procrastinate (`procrastinate_engine.py`), `cauce worker`.
"""
