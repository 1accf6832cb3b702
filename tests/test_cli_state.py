"""`state copy`: a whole state moves between SQLite and PostgreSQL, nothing lost or changed."""

from __future__ import annotations

from typing import Any

from tests.pg_server import PASSWORD, rows
from tests.test_store_postgres import normalized

SONNET = "anthropic:claude-3-5-sonnet-latest"
READS = [("health", "--json"), ("fallbacks", "--json"), ("health", "--history", SONNET, "--json")]


def fill(cli: Any) -> None:
    assert cli("probe", "--json").exit_code == 0
    for n in range(3):
        args = ("start", "--simulation-id", f"s{n}", "--primary", SONNET, "--json")
        assert cli(*args).exit_code == 0


def documents(cli: Any, location: str) -> list[Any]:
    return [normalized(cli(*command, "--db", location).json) for command in READS]


def test_sqlite_to_postgres_and_back_keeps_every_document(cli, db_file, pg_url, tmp_path):
    fill(cli)
    before = documents(cli, str(db_file))
    there = cli("state", "copy", "--to", pg_url, "--json")
    assert there.exit_code == 0, there.stderr
    copied = there.json["copied"]
    assert copied["events"] == 3 and copied["probes"] == len(rows(db_file, "SELECT 1 FROM probes"))
    assert there.json["from"] == str(db_file) and PASSWORD not in there.stdout
    assert documents(cli, pg_url) == before

    back = tmp_path / "back.db"
    result = cli("state", "copy", "--from", pg_url, "--to", str(back), "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json["copied"] == copied
    assert documents(cli, str(back)) == before
    for table in ("probes", "events", "snapshots", "status_changes", "event_counts"):
        assert rows(back, f"SELECT * FROM {table} ORDER BY 1") == rows(
            db_file, f"SELECT * FROM {table} ORDER BY 1"
        ), table


def test_new_rows_after_a_copy_get_new_ids(cli, db_file, pg_url):
    fill(cli)
    assert cli("state", "copy", "--to", pg_url).exit_code == 0
    start = ("start", "--simulation-id", "after", "--primary", SONNET, "--db", pg_url, "--json")
    assert cli(*start).exit_code == 0
    events = cli("fallbacks", "--db", pg_url, "--json").json["events"]
    assert [e["simulationId"] for e in events] == ["after", "s2", "s1", "s0"]
    assert len({e["id"] for e in events}) == 4 and events[0]["id"] > events[1]["id"]


def test_a_target_that_holds_state_is_refused_and_left_alone(cli, db_file, pg_url):
    fill(cli)
    assert cli("state", "copy", "--to", pg_url).exit_code == 0
    before = rows(pg_url, "SELECT count(*) FROM probes")
    again = cli("state", "copy", "--to", pg_url)
    assert again.exit_code == 2 and again.stdout == ""
    assert "already holds state" in again.stderr and PASSWORD not in again.stderr
    assert rows(pg_url, "SELECT count(*) FROM probes") == before


def test_an_empty_source_is_refused_and_nothing_is_created(cli, db_file, tmp_path):
    target = tmp_path / "target.db"
    result = cli("state", "copy", "--to", str(target))
    assert result.exit_code == 2 and "no state there to copy" in result.stderr
    assert not target.exists() and not db_file.exists()


def test_people_are_told_what_was_copied(cli, db_file, tmp_path):
    fill(cli)
    result = cli("state", "copy", "--to", str(tmp_path / "copy.db"))
    assert result.exit_code == 0
    assert "3 fallback events" in result.stdout and str(db_file) in result.stdout
