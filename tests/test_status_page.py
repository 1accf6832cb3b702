"""The status page (`GET /`): what a person sees, in Debian's chromium at phone and desktop
widths, and that an id like `<script>` is shown as text, never run."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from voicefallback.config import Thresholds, load_registry
from voicefallback.environment import config_path
from voicefallback.health import apply_probe
from voicefallback.records import Candidate, FallbackEvent, ProbeResult, TtftBucket, utcnow
from voicefallback.reports import BoardRow, ModelHealth, SuccessRate, status_board
from voicefallback.server.page import render_status_page, render_unavailable_page, sparkline
from voicefallback.stats import RecentStats
from voicefallback.store import open_store

pytest_plugins = ["tests.conftest_serve"]

SONNET = "anthropic:claude-3-5-sonnet-latest"
MINI = "openai:gpt-4o-mini"
MODELS = [MINI, SONNET, "openai:gpt-4o", "anthropic:claude-3-5-haiku-latest"]
SHOWN = [SONNET, MINI, "openai:gpt-4o", "anthropic:claude-3-5-haiku-latest"]  # not healthy first
MAVERICK = "groq:meta-llama/llama-4-maverick-17b-128e-instruct"
LONG_SESSION = "interview-" + "candidate" * 14
HOSTILE = '<script>alert("sim")</script><img src=x onerror=alert(1)>'
CHROMIUM = "/usr/bin/chromium"


def populate(server: Any) -> None:
    """A probe round, then sessions that fell back, one with a hostile id."""
    assert server.post("/health/probe").status_code == 200
    for simulation_id in ("sim-1", HOSTILE):
        answer = server.post(
            "/interviews/start", json={"simulationId": simulation_id, "primary": SONNET}
        )
        assert answer.status_code == 200


def test_the_page_is_self_contained_and_escapes_every_id(serve):
    server = serve()
    populate(server)
    page = server.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    html = page.text
    assert (
        HOSTILE not in html
        and "<script" not in html
        and "onerror=alert" not in html.replace("onerror=alert(1)&gt;", "")
    )
    assert "&lt;script&gt;alert(&quot;sim&quot;)&lt;/script&gt;" in html
    assert "http://" not in html and "https://" not in html  # no CDN, no fonts, nothing fetched
    assert '<meta http-equiv="refresh"' in html
    for model in MODELS:
        assert f'data-model="{model}"' in html


def test_sparkline_draws_the_last_24_hours_with_gaps_and_failures(config_file):

    now = utcnow().replace(minute=59, second=0, microsecond=0)
    registry = load_registry(config_path(None))
    model = registry.require(MINI, "test")
    model = type(model)(model.id, model.provider, model.name, Thresholds(ttft_budget_ms=350))
    health = ModelHealth(model, None, "healthy", None, RecentStats(0, 0, None, None, None), None)
    series = [
        TtftBucket(now - timedelta(minutes=60), 2, 2, 200),
        TtftBucket(now - timedelta(minutes=45), 2, 2, 300),  # joined to the one before
        TtftBucket(now - timedelta(minutes=15), 3, 1, 400),  # after a gap: a new line
    ]
    svg = sparkline(BoardRow(health, [SuccessRate(300, 0, 0)], series), now)
    assert svg.count("<polyline") == 1 and svg.count("<circle") == 1  # two runs of points
    assert svg.count('class="fail"') == 1  # the slice where calls failed
    assert 'class="budget"' in svg and "budget 350 ms" in svg and "peak 400 ms" in svg
    # Every figure far under the budget: the budget line is still drawn, above them.
    fast = [TtftBucket(now - timedelta(minutes=15), 1, 1, 120)]
    relaxed = type(model)(model.id, model.provider, model.name, Thresholds(ttft_budget_ms=1500))
    health = ModelHealth(relaxed, None, "healthy", None, RecentStats(0, 0, None, None, None), None)
    svg = sparkline(BoardRow(health, [SuccessRate(300, 1, 1)], fast), now)
    budget_y = float(svg.split('class="budget"')[1].split('y1="')[1].split('"')[0])
    point_y = float(svg.split('cy="')[1].split('"')[0])
    assert 0 < budget_y < point_y  # higher on the chart than the 120 ms point


def test_models_that_are_not_healthy_come_first_and_are_named_in_the_header(config_file, db_file):
    registry = load_registry(config_path(None))
    now = utcnow()
    failure = ProbeResult(SONNET, False, now, error="overloaded", message="HTTP 529")
    with open_store(db_file, write=True) as store:
        for model in registry.models:
            result = failure if model.id == SONNET else ProbeResult(model.id, True, now, 200, 150)
            store.record([result], {model.id: model.thresholds}, update=apply_probe)
    html = render_status_page(status_board(registry.models, db_file, now), "stub")
    header = html.split("<header>")[1].split("</header>")[0]
    assert "Not healthy" in header and "anthropic:<wbr>claude-3-5-sonnet-latest" in header
    assert "unhealthy (overloaded)" in header and "gpt-4o-mini" not in header
    shown = [part.split('"')[0] for part in html.split('data-model="')[1:]]
    assert shown == SHOWN


def test_the_state_unavailable_page_says_what_is_wrong_once():
    message = "postgresql://voicefallback@db.internal/state: cannot reach the state database"
    html = render_unavailable_page(message, utcnow())
    assert html.count("cannot reach the state database") == 1
    assert "state unavailable" in html and "Latest fallback events" not in html


def _chromium_or_skip() -> None:
    if os.path.exists(CHROMIUM) and shutil.which("chromium"):
        return
    if os.environ.get("CI"):  # CI installs it (.ci/run): missing there is a failure
        pytest.fail(f"{CHROMIUM} missing: `apt-get install chromium`")
    pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")


@pytest.fixture
def browser() -> Iterator[Any]:
    _chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-extensions",
                "--no-first-run",
            ],
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.mark.parametrize("width", [390, 1280])
def test_a_person_reads_the_page_at_phone_and_desktop_width(serve, browser, width):
    server = serve()
    populate(server)
    page = browser.new_page(viewport={"width": width, "height": 900})
    requested: list[str] = []
    dialogs: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(server.url + "/")

    assert page.title() == "voicefallback: 3/4 healthy"
    cards = page.locator("article.card")
    assert cards.count() == 4
    boxes = []
    header = page.locator("header").inner_text()
    assert "Not healthy" in header and SONNET in header and MINI not in header
    for index, model in enumerate(SHOWN):
        card = cards.nth(index)
        assert card.is_visible()
        assert card.locator(".model").inner_text() == model
        badge = card.locator(".badge").inner_text()
        assert badge == ("unhealthy" if model == SONNET else "healthy")
        text = card.inner_text()
        assert "TTFT p50 / p95 (1 h)" in text and "last error" in text and "status since" in text
        spark = card.locator("svg.spark").bounding_box()
        assert spark is not None and spark["width"] > 200 and spark["height"] > 20
        assert card.locator("svg.spark line.budget").count() == 1  # on every sparkline
        boxes.append(card.bounding_box())
    sonnet = cards.nth(0).inner_text()
    assert "overloaded" in sonnet and "0%" in sonnet
    assert "100%" in cards.nth(1).inner_text()
    if width == 1280:  # side by side on a desktop...
        assert len({round(box["y"]) for box in boxes}) < len(boxes)
    else:  # ...one above the other on a phone
        assert len({round(box["x"]) for box in boxes}) == 1

    # Nothing wider than the screen: no sideways scrolling to read a row.
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    events = page.locator("main table tbody tr")
    assert events.count() == 2
    newest = events.nth(0).inner_text()
    assert HOSTILE in newest and "primary_unhealthy" in newest and MINI in newest
    assert "sim-1" in events.nth(1).inner_text()
    # The hostile id is text: it ran nothing and loaded nothing.
    assert dialogs == [] and requested == [server.url + "/"]
    font = page.evaluate("getComputedStyle(document.body).fontSize")
    assert float(font.removesuffix("px")) >= 14  # readable without zooming


def test_the_page_shows_a_model_with_no_history_yet(serve, browser):
    server = serve()
    page = browser.new_page(viewport={"width": 375, "height": 800})
    page.goto(server.url + "/")
    first = page.locator("article.card").nth(0)
    assert first.locator(".badge").inner_text() == "unknown"
    assert "No fallback events recorded." in page.locator("main").inner_text()


def test_success_rates_and_last_error_come_from_the_state(config_file, state):
    """The board's figures, on both backends: 5 min / 1 h / 24 h success rates over every
    call, the last hour's TTFT percentiles, the 24 h series, the latest events."""

    registry = load_registry(config_path(None))
    mini = registry.require(MINI, "test")
    now = utcnow()
    calls = [
        ProbeResult(MINI, True, now - timedelta(minutes=2), 200, 150),
        ProbeResult(MINI, False, now - timedelta(minutes=3), error="timeout"),
        ProbeResult(MINI, True, now - timedelta(minutes=30), 200, 170),
        ProbeResult(MINI, True, now - timedelta(hours=5), 200, 190),
    ]
    with open_store(state, write=True) as store:
        for call in sorted(calls, key=lambda c: c.at):
            store.record([call], {MINI: mini.thresholds}, update=apply_probe)
        store.record(
            [],
            {},
            FallbackEvent(
                "u1",
                now,
                "s",
                SONNET,
                MINI,
                "primary_unhealthy",
                "auto",
                [Candidate(SONNET, "unhealthy")],
            ),
            update=apply_probe,
        )
    board = status_board([mini], state, now)
    row = board.models[0]
    assert [(r.calls, r.successes) for r in row.success] == [(2, 1), (3, 2), (4, 3)]
    assert row.health.recent.ttft_p50_ms == 150 and row.health.recent.ttft_p95_ms == 170
    assert row.health.last_failure is not None and row.health.last_failure.error == "timeout"
    assert sum(b.calls for b in row.series) == 4 and sum(b.successes for b in row.series) == 3
    assert [b.ttft_ms for b in row.series][-1] == 150  # the newest slice: one success at 150
    assert all(b.start.minute % 15 == 0 for b in row.series)
    assert [e.simulation_id for e in board.events] == ["s"]


# Where each line of an element's text ends, as the browser laid it out.
LINE_ENDS = """(element) => {
  const chars = [], tops = [];
  const walker = document.createTreeWalker(element, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode;
    for (let i = 0; i < node.length; i++) {
      const range = document.createRange();
      range.setStart(node, i);
      range.setEnd(node, i + 1);
      const rect = range.getClientRects()[0];
      if (rect) { chars.push(node.data[i]); tops.push(rect.top); }
    }
  }
  const ends = [];
  for (let i = 1; i < chars.length; i++) {
    if (tops[i] > tops[i - 1] + 1) ends.push(chars.slice(0, i).join(""));
  }
  return ends;
}"""


@pytest.mark.parametrize("width", [390, 1280])
def test_ids_and_reasons_never_break_mid_word(serve, browser, config_file, width):
    """A long model id wraps only after ':', '/' or '-'; a reason never wraps; one long
    session id does not squeeze the rest; a misconfigured card says what the provider said."""
    config_file.write_text(
        config_file.read_text()
        + '\n[providers.groq]\ntype = "openai"\nbase_url = "https://api.groq.com/openai/v1"\n'
        + f'\n[[models]]\nid = "{MAVERICK}"\nstub = {{ error = "not_found" }}\n'
    )
    server = serve()
    assert server.post("/health/probe").status_code == 200
    for simulation_id in (LONG_SESSION, "sim-1"):
        answer = server.post(
            "/interviews/start",
            json={"simulationId": simulation_id, "primary": MAVERICK, "fallbacks": [SONNET, MINI]},
        )
        assert answer.status_code == 200, answer.text
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.goto(server.url + "/")
    assert page.evaluate("document.documentElement.scrollWidth") <= width

    card = page.locator(f'article.card[data-model="{MAVERICK}"]')
    assert "provider said" in card.inner_text()
    assert "stub: HTTP 404 model not found" in card.inner_text()
    ids = page.locator(".id")
    assert ids.count() > 5
    for index in range(ids.count()):
        for end in ids.nth(index).evaluate(LINE_ENDS):
            assert end[-1] in ":/-", (ids.nth(index).inner_text(), end)
    reasons = page.locator(".reason")
    assert reasons.count() == 2
    for index in range(reasons.count()):
        assert reasons.nth(index).evaluate(LINE_ENDS) == []
    assert LONG_SESSION in page.locator("main table").inner_text().replace("\n", "")


def test_the_state_unavailable_page_reads_at_phone_width(browser):
    message = (
        "postgresql://voicefallback@db-primary.internal.example.com:5432/voicefallback_state:"
        " cannot reach the state database: connection timed out after 10 s"
    )
    page = browser.new_page(viewport={"width": 390, "height": 800})
    page.set_content(render_unavailable_page(message, utcnow()))
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert page.locator("body").inner_text().count("cannot reach the state database") == 1
    assert page.locator('[role="alert"]').is_visible()
