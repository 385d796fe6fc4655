"""Migration 0026 on PostgreSQL: the trigram index free-text search reads a rare word by,
made when `pg_trgm` can be created and left out, with the upgrade going on, when not."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from cauce.core.db import create_database
from cauce.core.db.migrate import current_revisions, upgrade
from tests.conftest import _pg_exec, _require_pg, make_settings
from tests.core.test_db import HEADS, SEARCH_TRIGRAM_INDEX

pytestmark = pytest.mark.usefixtures("backend")


def _postgres_only(backend: str) -> None:
    if backend != "postgresql":
        pytest.skip("PostgreSQL's index (SQLite's search stays a scan)")


async def _indexed(url: str, tmp_path: Path) -> bool:
    db = create_database(make_settings(tmp_path), url=url)
    try:
        async with db.engine.connect() as conn:
            found = await conn.scalar(
                text("SELECT count(*) FROM pg_indexes WHERE indexname = :name"),
                {"name": SEARCH_TRIGRAM_INDEX},
            )
        assert await current_revisions(db) == HEADS
    finally:
        await db.dispose()
    return bool(found)


async def test_the_index_is_made_where_pg_trgm_can_be(
    backend: str, database_url: str, tmp_path: Path
) -> None:
    _postgres_only(backend)
    assert await _indexed(database_url, tmp_path)


async def test_a_user_who_cannot_create_the_extension_still_upgrades(
    backend: str, tmp_path: Path
) -> None:
    """The migrating user owns the tables but has no `CREATE` on the database (a trusted
    extension needs it): the index is left out with a warning, and the schema reaches
    head all the same."""
    _postgres_only(backend)
    admin = _require_pg()
    suffix = uuid.uuid4().hex[:10]
    name, role = f"cauce_t_{suffix}", f"cauce_limited_{suffix}"
    _pg_exec(admin, f"CREATE ROLE {role} LOGIN PASSWORD 'limited'")
    _pg_exec(admin, f'CREATE DATABASE "{name}"')
    try:
        _pg_exec(admin, f'REVOKE CREATE ON DATABASE "{name}" FROM PUBLIC')
        on_db = make_url(admin).set(database=name).render_as_string(hide_password=False)
        _pg_exec(on_db, f"GRANT ALL ON SCHEMA public TO {role}")
        url = make_url(on_db).set(username=role, password="limited")
        limited = url.render_as_string(hide_password=False)
        db = create_database(make_settings(tmp_path), url=limited)
        try:
            await upgrade(db, "head")
        finally:
            await db.dispose()
        assert not await _indexed(limited, tmp_path)
    finally:
        _pg_exec(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        _pg_exec(admin, f"DROP ROLE IF EXISTS {role}")
