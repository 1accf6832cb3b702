"""`fallbacks` and `GET /fallbacks` answer one page at a time, and say how many there are."""

from __future__ import annotations

from pathlib import Path

import pytest

from voicefallback.router import SessionRouter

pytest_plugins = ["tests.conftest_serve"]

SONNET = "anthropic:claude-3-5-sonnet-latest"  # down in the shipped stub registry
EVENTS = 250


@pytest.fixture
def history(config_file: Path, db_file: Path) -> list[int]:
    """EVENTS fallback events (every start on SONNET falls back); their ids, newest first."""
    router = SessionRouter(config=config_file, db=db_file)
    try:
        for index in range(EVENTS):
            outcome = router.choose(f"sim-{index % 3}", SONNET)
            assert outcome.event is not None
    finally:
        router.close()
    return list(range(EVENTS, 0, -1))


def test_fallbacks_pages_through_every_event_once(cli, history):
    first = cli("fallbacks", "--json").json
    assert [e["id"] for e in first["events"]] == history[:100]  # 100 without --limit
    assert (first["total"], first["limit"], first["nextBefore"]) == (EVENTS, 100, history[99])

    seen, before = [], None
    while True:
        args = ["--limit", "120"] + (["--before", str(before)] if before else [])
        page = cli("fallbacks", "--json", *args).json
        assert page["total"] == EVENTS
        seen += [e["id"] for e in page["events"]]
        before = page["nextBefore"]
        if before is None:
            break
    assert seen == history  # each once, newest first

    one = cli("fallbacks", "--json", "--simulation-id", "sim-1", "--limit", "5").json
    assert one["total"] == len([i for i in range(EVENTS) if i % 3 == 1])
    assert {e["simulationId"] for e in one["events"]} == {"sim-1"}


def test_the_table_shows_a_page_and_says_how_to_see_the_rest(cli, history):
    table = cli("fallbacks")
    assert table.exit_code == 0
    assert f"100 of {EVENTS} events; older ones: --before {history[99]}" in table.stdout
    last = cli("fallbacks", "--before", str(history[-3]))
    assert "2 of 250 events" in last.stdout and "--before" not in last.stdout.split("events")[-1]


def test_http_fallbacks_pages_as_the_cli_does(serve, cli, history):
    server = serve()
    first = server.get("/fallbacks")
    assert first.status_code == 200
    assert first.content.decode() == cli("fallbacks", "--json").stdout
    assert len(first.json()["events"]) == 100 and first.json()["total"] == EVENTS
    second = server.get("/fallbacks", params={"before": first.json()["nextBefore"]}).json()
    assert [e["id"] for e in second["events"]] == history[100:200]
    too_many = server.get("/fallbacks", params={"limit": 1001})
    assert too_many.status_code == 400 and too_many.json()["error"].startswith("limit")
