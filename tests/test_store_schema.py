"""Migrations: a state built at schema 1 and upgraded by opening it has the whole schema of a
fresh one (tables, columns, types, indexes, their SQL), on SQLite and on PostgreSQL, and keeps
what it held."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import voicefallback.store.sqlite as sqlite_backend
from tests.pg_server import rows
from voicefallback.store import SCHEMA_VERSION, open_store
from voicefallback.store.schema import MIGRATIONS, PG_MIGRATIONS

AT = "2026-01-01T00:00:00.000Z"
# What a state at schema 1 could hold: a failed probe, the snapshot it left, one event.
SCHEMA_1_ROWS = (
    "INSERT INTO probes (model, at, kind, ok, error, stub) VALUES"
    f" ('p:m', '{AT}', 'probe', 0, 'overloaded', 1)",
    "INSERT INTO snapshots (model, last_checked_at, ok, last_error, consecutive_failures,"
    " consecutive_successes, failing, has_success, stub, status_since, last_status) VALUES"
    f" ('p:m', '{AT}', 0, 'overloaded', 1, 0, 1, 0, 1, '{AT}', 'unhealthy')",
    "INSERT INTO events (uid, at, simulation_id, primary_model, chosen, reason, candidates)"
    f" VALUES ('u1', '{AT}', 's1', 'p:m', 'p:n', 'primary_unhealthy', '[]')",
)


def sqlite_schema(path: Path | str) -> dict[str, Any]:
    with sqlite3.connect(path) as conn:
        master = conn.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
        ).fetchall()
        tables = [name for kind, name, _, _ in master if kind == "table"]
        return {
            "sqlite_master": master,
            "columns": {t: conn.execute(f"PRAGMA table_xinfo({t})").fetchall() for t in tables},
            "user_version": conn.execute("PRAGMA user_version").fetchone(),
            "application_id": conn.execute("PRAGMA application_id").fetchone(),
            "journal_mode": conn.execute("PRAGMA journal_mode").fetchone(),
            "migrations": conn.execute("SELECT number, name FROM migrations").fetchall(),
        }


def postgres_schema(url: Path | str) -> dict[str, Any]:
    here = "table_schema = current_schema()"
    return {
        "columns": rows(
            url,
            "SELECT table_name, ordinal_position, column_name, data_type, is_nullable,"
            " column_default, collation_name, is_identity, identity_generation"
            f" FROM information_schema.columns WHERE {here} ORDER BY 1, 2",
        ),
        "indexes": rows(
            url,
            "SELECT tablename, indexname, indexdef FROM pg_indexes"
            " WHERE schemaname = current_schema() ORDER BY 1, 2",
        ),
        "constraints": rows(
            url,
            "SELECT table_name, constraint_name, constraint_type"
            f" FROM information_schema.table_constraints WHERE {here}"
            # NOT NULL shows in `columns`; its constraint is named after table OIDs
            " AND constraint_name NOT LIKE '%\\_not\\_null' ORDER BY 1, 2",
        ),
        "migrations": rows(url, "SELECT number, name FROM migrations ORDER BY number"),
    }


def execute(location: Path | str, statements: tuple[str, ...]) -> None:
    if isinstance(location, str):
        import psycopg

        with psycopg.connect(location) as conn:
            for sql in statements:
                conn.execute(sql.encode())
    else:
        with sqlite3.connect(location) as conn:
            for sql in statements:
                conn.execute(sql)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> tuple[Callable[[], Path | str], Callable[[Path | str], dict[str, Any]]]:
    """A way to get a new, empty location on one backend, and how to read its schema."""
    if request.param == "sqlite":
        names = iter(range(100))
        return (lambda: tmp_path / f"state{next(names)}.db"), sqlite_schema
    server = request.getfixturevalue("pg_server")
    return server.new_database, postgres_schema


def at_schema_1(location: Path | str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Create a state the way a voicefallback that knew only the first migration did: the
    store's own migration code, with every later migration out of its sight."""
    with monkeypatch.context() as patch:
        patch.setattr(sqlite_backend, "MIGRATIONS", MIGRATIONS[:1])
        patch.setattr(sqlite_backend, "SCHEMA_VERSION", 1)
        if isinstance(location, str):
            import voicefallback.store.postgres as postgres_backend

            patch.setattr(postgres_backend, "PG_MIGRATIONS", PG_MIGRATIONS[:1])
            patch.setattr(postgres_backend, "SCHEMA_VERSION", 1)
        open_store(location, write=True).close()


def test_a_state_upgraded_from_schema_1_has_the_schema_of_a_fresh_one(backend, monkeypatch):
    new_location, schema = backend
    fresh, upgraded = new_location(), new_location()
    open_store(fresh, write=True).close()
    at_schema_1(upgraded, monkeypatch)
    assert schema(upgraded)["migrations"] == [(1, "m001_initial")]
    execute(upgraded, SCHEMA_1_ROWS)

    with open_store(upgraded, write=True) as store:  # opening it for writing upgrades it
        assert "p:m" in store.snapshots(["p:m"])

    assert SCHEMA_VERSION > 1, "with one migration there is nothing to upgrade from"
    assert schema(upgraded) == schema(fresh)
    assert len(schema(fresh)["migrations"]) == SCHEMA_VERSION
    # What it held is still there, and what later migrations derive from it was derived.
    assert rows(upgraded, "SELECT model, error FROM probes") == [("p:m", "overloaded")]
    assert rows(upgraded, "SELECT simulation_id FROM events") == [("s1",)]
    assert rows(upgraded, "SELECT model, from_status, to_status FROM status_changes") == [
        ("p:m", None, "unhealthy")
    ]
    assert rows(upgraded, "SELECT reason, count FROM event_counts") == [("primary_unhealthy", 1)]


# The schema version 1 shipped with. A migration that has shipped is never edited (a state
# file out there already holds what it built); a change is a new migration.
SHIPPED_SCHEMA_1 = {
    "events": "id INTEGER PRIMARY KEY, uid TEXT NOT NULL, at TEXT NOT NULL,"
    " simulation_id TEXT NOT NULL, primary_model TEXT NOT NULL, chosen TEXT,"
    " reason TEXT NOT NULL, fallback_source TEXT, candidates TEXT NOT NULL, error TEXT",
    "migrations": "number INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL",
    "probes": "id INTEGER PRIMARY KEY, model TEXT NOT NULL, at TEXT NOT NULL, kind TEXT NOT NULL,"
    " ok INTEGER NOT NULL, latency_ms INTEGER, ttft_ms INTEGER, error TEXT, message TEXT,"
    " http_status INTEGER, retry_after_s REAL, input_tokens INTEGER, output_tokens INTEGER,"
    " stub INTEGER NOT NULL",
    "snapshots": "model TEXT PRIMARY KEY, last_checked_at TEXT, ok INTEGER, latency_ms INTEGER,"
    " ttft_ms INTEGER, last_error TEXT, consecutive_failures INTEGER,"
    " consecutive_successes INTEGER, failing INTEGER, has_success INTEGER,"
    " success_latency_ms INTEGER, success_ttft_ms INTEGER, stub INTEGER, status_since TEXT,"
    " last_status TEXT",
    "events_at": "events (at)",
    "events_simulation": "events (simulation_id, id)",
    "events_uid": "UNIQUE events (uid)",
    "probes_at": "probes (at)",
    "probes_model_at": "probes (model, at)",
}


def described(path: Path) -> dict[str, str]:
    """Each table's columns and each index's columns, as SHIPPED_SCHEMA_1 writes them."""
    described = {}
    with sqlite3.connect(path) as conn:
        master = conn.execute(
            "SELECT type, name, tbl_name FROM sqlite_master WHERE sql IS NOT NULL"
        ).fetchall()
        for kind, name, table in master:
            if kind == "table":
                described[name] = ", ".join(
                    " ".join([column, type_, *(["PRIMARY KEY"] * pk), *(["NOT NULL"] * notnull)])
                    for _, column, type_, notnull, _, pk in conn.execute(
                        f"PRAGMA table_info({name})"
                    )
                )
            elif kind == "index":
                unique = {row[1]: row[2] for row in conn.execute(f"PRAGMA index_list({table})")}
                columns = [row[2] for row in conn.execute(f"PRAGMA index_info({name})")]
                prefix = "UNIQUE " if unique[name] else ""
                described[name] = f"{prefix}{table} ({', '.join(columns)})"
    return described


def test_migration_1_still_builds_the_schema_version_1_shipped_with(tmp_path, monkeypatch):
    at_schema_1(tmp_path / "state.db", monkeypatch)
    assert described(tmp_path / "state.db") == SHIPPED_SCHEMA_1
