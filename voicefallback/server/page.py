"""The status page: one self-contained HTML document (inline CSS and SVG, no script, no fonts).

Every value from the registry or the state file goes through `_e` (HTML escaping), so an id
like `<script>` shows as text.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from html import escape
from string import Template

from voicefallback.durations import format_age, format_span
from voicefallback.records import FallbackEvent, iso
from voicefallback.reports import (
    SERIES_BUCKET_MINUTES,
    SERIES_SPAN_S,
    BoardRow,
    StatusBoard,
    SuccessRate,
)

REFRESH_S = 30  # the page reloads itself; a voice team leaves it open on a second screen

# Badge colours pass WCAG AA contrast with white text.
_BADGE = {
    "healthy": "#137333",
    "slow": "#9a5b00",
    "unhealthy": "#b3261e",
    "misconfigured": "#8e24aa",
    "stale": "#5f6368",
    "unknown": "#5f6368",
}

_PAGE = Template("""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="$refresh">
<title>$title</title>
<style>
:root { color-scheme: light dark; --fg: #1f1f1f; --muted: #5f6368; --bg: #f8f9fa;
  --card: #fff; --line: #dadce0; --spark: #1a73e8; --bad: #b3261e; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #e8eaed; --muted: #9aa0a6; --bg: #202124; --card: #2d2e31; --line: #3c4043;
    --spark: #8ab4f8; --bad: #f28b82; }
}
* { box-sizing: border-box; }
body { margin: 0; padding: 16px; background: var(--bg); color: var(--fg);
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
header { display: flex; flex-wrap: wrap; gap: 4px 16px; align-items: baseline;
  margin-bottom: 16px; }
h1 { font-size: 20px; margin: 0; }
h2 { font-size: 17px; margin: 24px 0 8px; }
.muted { color: var(--muted); }
.grid { display: grid; gap: 12px;
  grid-template-columns: repeat(auto-fill, minmax(min(100%, 330px), 1fr)); }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
  padding: 12px 14px; min-width: 0; }
.head { display: flex; gap: 8px; align-items: flex-start; justify-content: space-between; }
/* Ids and reasons break only where <wbr> (after ':' and '/') or a hyphen allows, never
   mid-word; what a caller chose (a session id) may break anywhere, so one long id cannot
   widen its column and squeeze the others. */
.id { overflow-wrap: normal; word-break: normal; }
.model { font-weight: 600; }
.reason { white-space: nowrap; }
.session { overflow-wrap: anywhere; }
.attention { flex-basis: 100%; margin: 4px 0 0; padding: 10px 14px; border-radius: 8px;
  border: 1px solid var(--bad); background: var(--card); overflow-wrap: anywhere; }
.attention ul { margin: 4px 0 0; padding-left: 20px; }
.badge { flex: none; color: #fff; border-radius: 999px; padding: 1px 10px; font-size: 13px;
  font-weight: 600; }
dl { display: grid; grid-template-columns: auto 1fr; gap: 2px 12px; margin: 10px 0 6px; }
dt { color: var(--muted); }
dd { margin: 0; overflow-wrap: anywhere; }
.rates { display: flex; flex-wrap: wrap; gap: 0 12px; }
.rate { white-space: nowrap; }
svg.spark { display: block; width: 100%; height: 48px; margin-top: 6px; }
.spark .line { fill: none; stroke: var(--spark); stroke-width: 1.5;
  vector-effect: non-scaling-stroke; }
.spark .budget { stroke: var(--muted); stroke-dasharray: 3 3; stroke-width: 1;
  vector-effect: non-scaling-stroke; }
.spark .fail { fill: var(--bad); }
.axis { display: flex; justify-content: space-between; font-size: 12px; color: var(--muted); }
table { width: 100%; border-collapse: collapse; background: var(--card);
  border: 1px solid var(--line); border-radius: 8px; }
th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid var(--line);
  vertical-align: top; }
th { color: var(--muted); font-weight: 600; font-size: 13px; }
@media (max-width: 700px) {
  table, tbody, tr, td { display: block; }
  thead { display: none; }
  tr { border-bottom: 1px solid var(--line); padding: 6px 0; }
  td { border: 0; padding: 2px 10px; }
  td::before { content: attr(data-label) ": "; color: var(--muted); }
}
</style>
</head>
<body>
<header>
<h1>voicefallback</h1>
<span class="muted">$summary</span>
<span class="muted">updated <time datetime="$at">$at_text</time>,
refreshes every ${refresh} s</span>
$attention
</header>
<main>
$main
</main>
</body>
</html>
""")


NONE = "&ndash;"  # shown where there is nothing to show


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _id(model_id: str) -> str:
    """A model id, escaped, that may wrap after its ':' and '/' (and hyphens), never mid-word."""
    return (
        '<span class="id">' + _e(model_id).replace(":", ":<wbr>").replace("/", "/<wbr>") + "</span>"
    )


def _ms(value: int | None) -> str:
    return NONE if value is None else f"{value} ms"


def _ago(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return NONE
    seconds = max(0.0, (now - moment).total_seconds())
    return f'<time datetime="{iso(moment)}" title="{iso(moment)}">{format_age(seconds)} ago</time>'


def _since(moment: datetime | None, now: datetime) -> str:
    """`16:02 UTC (3h 20m)`: when the status began, and how long it has held."""
    if moment is None:
        return NONE
    held = format_age(max(0.0, (now - moment).total_seconds()))
    when = moment.strftime(
        "%H:%M UTC" if now - moment < timedelta(days=1) else "%Y-%m-%d %H:%M UTC"
    )
    return f'<time datetime="{iso(moment)}" title="{iso(moment)}">{when}</time> ({held})'


def _rate(rate: SuccessRate) -> str:
    span = format_span(rate.span_s)
    if rate.calls == 0:
        return f'<span title="no calls in {span}">{NONE}</span>'
    percent = 100 * rate.successes / rate.calls
    shown = f"{percent:.0f}" if percent in (0, 100) or percent >= 1 else f"{percent:.1f}"
    return f'<span title="{rate.successes} of {rate.calls} calls in {span}">{shown}%</span>'


def sparkline(row: BoardRow, now: datetime) -> str:
    """First-token time per 15-minute slice over 24 h; gaps where nothing was called, red
    ticks where calls failed, a dashed line at the model's budget."""
    slots = int(SERIES_SPAN_S // (SERIES_BUCKET_MINUTES * 60))
    width, height = slots, 40
    budget = row.health.model.thresholds.ttft_budget_ms
    start = now - timedelta(seconds=SERIES_SPAN_S)
    figures = [b.ttft_ms for b in row.series if b.ttft_ms is not None]
    peak = max(figures, default=budget)
    top = max(peak, budget) * 1.15  # the budget line is always in range, whatever was measured

    def slot(moment: datetime) -> int:
        return int((moment - start).total_seconds() // (SERIES_BUCKET_MINUTES * 60))

    def y(value: int) -> float:
        return round(height - value / top * (height - 2), 1)

    lines: list[list[str]] = []
    ticks: list[str] = []
    previous = -2
    for bucket in row.series:
        x = min(max(slot(bucket.start), 0), slots - 1)
        if bucket.ttft_ms is not None:
            if x != previous + 1 or not lines:
                lines.append([])
            lines[-1].append(f"{x + 0.5},{y(bucket.ttft_ms)}")
            previous = x
        if bucket.successes < bucket.calls:
            ticks.append(f'<rect class="fail" x="{x}" y="{height - 4}" width="1" height="4"/>')
    paths = "".join(
        f'<polyline class="line" points="{" ".join(points)}"/>'
        if len(points) > 1
        else f'<circle class="line" cx="{points[0].split(",")[0]}" '
        f'cy="{points[0].split(",")[1]}" r="0.6"/>'
        for points in lines
    )
    label = (
        f"first-token time over the last 24 hours: {len(figures)} of {slots} slices with "
        f"successful calls, budget {budget} ms"
    )
    budget_line = f'<line class="budget" x1="0" x2="{width}" y1="{y(budget)}" y2="{y(budget)}"/>'
    return (
        f'<svg class="spark" viewBox="0 0 {width} {height}" preserveAspectRatio="none" '
        f'role="img" aria-label="{_e(label)}"><title>{_e(label)}</title>'
        f"{budget_line}{paths}{''.join(ticks)}</svg>"
        '<div class="axis"><span>24 h ago</span>'
        f"<span>first token{f', peak {peak} ms' if figures else ''}, budget {budget} ms</span>"
        "<span>now</span></div>"
    )


def _card(row: BoardRow, now: datetime) -> str:
    health = row.health
    status = health.status
    recent = health.recent
    failure = health.last_failure
    if failure is None:
        last_error = "none"
    else:
        last_error = f"{_e(failure.error or 'error')} {_ago(failure.at, now)}"
    # A misconfigured model needs a person: what the provider said tells them what to fix.
    said = ""
    if status == "misconfigured" and failure is not None and failure.message:
        said = f"<dt>provider said</dt><dd>{_e(failure.message)}</dd>"
    rates = "".join(
        f'<span class="rate"><span class="muted">{format_span(r.span_s)}</span> {_rate(r)}</span>'
        for r in row.success
    )
    return f"""<article class="card" data-model="{_e(health.model.id)}">
<div class="head"><span class="model">{_id(health.model.id)}</span>
<span class="badge" style="background:{_BADGE.get(status, "#5f6368")}">{_e(status)}</span></div>
<dl>
<dt>TTFT p50 / p95 (1 h)</dt><dd>{_ms(recent.ttft_p50_ms)} / {_ms(recent.ttft_p95_ms)}</dd>
<dt>success</dt><dd class="rates">{rates}</dd>
<dt>last error</dt><dd>{last_error}</dd>
{said}<dt>status since</dt><dd>{_since(health.status_since, now)}</dd>
</dl>
{sparkline(row, now)}
</article>"""


def _events(events: list[FallbackEvent], now: datetime) -> str:
    if not events:
        return '<p class="muted">No fallback events recorded.</p>'
    rows = []
    for event in events:
        passed = ", ".join(
            f"{_id(c.model)} {_e(c.status)}" + (f" ({_e(c.error)})" if c.error else "")
            for c in event.candidates
        )
        chosen = _id(event.chosen) if event.chosen else "<strong>none</strong>"
        rows.append(
            "<tr>"
            f'<td data-label="when">{_ago(event.at, now)}</td>'
            f'<td data-label="session" class="session">{_e(event.simulation_id)}</td>'
            f'<td data-label="primary">{_id(event.primary)}</td>'
            f'<td data-label="started on">{chosen}</td>'
            f'<td data-label="why"><span class="reason">{_e(event.reason)}</span></td>'
            f'<td data-label="passed over">{passed}</td>'
            "</tr>"
        )
    head = "".join(
        f"<th>{h}</th>" for h in ("when", "session", "primary", "started on", "why", "passed over")
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def render_unavailable_page(message: str, at: datetime) -> str:
    """The page while the state cannot be read: what is wrong, once, and it keeps refreshing,
    so the screen it is left open on comes back by itself."""
    return _PAGE.substitute(
        refresh=REFRESH_S,
        title="voicefallback: state unavailable",
        summary="state unavailable",
        attention="",
        at=iso(at),
        at_text=at.strftime("%H:%M:%S UTC"),
        main=f'<p class="attention" role="alert">{_e(message)}</p>',
    )


def render_status_page(board: StatusBoard, mode: str) -> str:
    """Models that are not healthy first, named in the header; then the rest in registry
    order, then the latest fallback events."""
    counts: dict[str, int] = {}
    for row in board.models:
        counts[row.health.status] = counts.get(row.health.status, 0) + 1
    summary = f"{len(board.models)} models ({mode} mode): " + ", ".join(
        f"{count} {status}" for status, count in counts.items()
    )
    healthy = counts.get("healthy", 0)
    rows = sorted(board.models, key=lambda row: row.health.status == "healthy")  # stable
    down = [row.health for row in rows if row.health.status != "healthy"]
    attention = ""
    if down:
        items = "".join(
            f"<li>{_id(h.model.id)}: {_e(h.status)}"
            + (f" ({_e(h.last_failure.error)})" if h.last_failure and h.last_failure.error else "")
            + "</li>"
            for h in down
        )
        attention = f'<div class="attention"><strong>Not healthy</strong><ul>{items}</ul></div>'
    cards = "\n".join(_card(row, board.at) for row in rows)
    main = (
        f'<section class="grid" aria-label="models">\n{cards}\n</section>\n'
        f"<h2>Latest fallback events</h2>\n{_events(board.events, board.at)}"
    )
    return _PAGE.substitute(
        refresh=REFRESH_S,
        title=_e(f"voicefallback: {healthy}/{len(board.models)} healthy"),
        summary=_e(summary),
        attention=attention,
        at=iso(board.at),
        at_text=board.at.strftime("%H:%M:%S UTC"),
        main=main,
    )
