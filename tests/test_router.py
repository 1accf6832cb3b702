"""The library entry points make the same choice as `start`, and record the same event."""

from __future__ import annotations

import sqlite3

import pytest

from voicefallback import SessionRouter, VoicefallbackError

pytest_plugins = ["tests.conftest_live"]

SONNET = "anthropic:claude-3-5-sonnet-latest"


def test_router_choice_matches_start(cli, config_file, db_file):
    with SessionRouter(config=config_file, db=db_file) as router:
        outcome = router.choose("sim-lib", SONNET)
        assert outcome.chosen == "openai:gpt-4o-mini"
        assert outcome.reason == "primary_unhealthy" and outcome.fallback_source == "auto"
        assert outcome.agent is None  # the worker makes its own opening call
        caller = router.choose("sim-lib-2", SONNET, ["openai:gpt-4o"])
        assert caller.chosen == "openai:gpt-4o" and caller.fallback_source == "caller"
        quiet = router.choose("sim-lib-3", SONNET, record_event=False)
        assert quiet.chosen == "openai:gpt-4o-mini" and quiet.event is None
        healthy = router.choose("sim-lib-4", "openai:gpt-4o-mini", opening_call=True)
        assert healthy.used_fallback is False and healthy.agent is not None
    cli_doc = cli("start", "--simulation-id", "sim-cli", "--primary", SONNET, "--json").json
    assert cli_doc["chosen"] == outcome.chosen
    events = cli("fallbacks", "--json").json["events"]
    assert [e["simulationId"] for e in events] == ["sim-cli", "sim-lib-2", "sim-lib"]


def test_router_refuses_unknown_models_like_start(config_file, db_file):
    with (
        SessionRouter(config=config_file, db=db_file) as router,
        pytest.raises(VoicefallbackError, match="unknown model 'openai:nope'"),
    ):
        router.choose("sim", "openai:nope")


def test_router_refuses_one_string_as_the_fallback_list(config_file, db_file):
    # A bare string is a sequence too: it must not be taken as one model id per character.
    with (
        SessionRouter(config=config_file, db=db_file) as router,
        pytest.raises(VoicefallbackError, match="fallbacks: a list of model ids, not one string"),
    ):
        router.choose("sim", SONNET, "openai:gpt-4o")
    if db_file.exists():  # nothing called, nothing written
        with sqlite3.connect(db_file) as conn:
            assert conn.execute("SELECT count(*) FROM probes").fetchone() == (0,)
            assert conn.execute("SELECT count(*) FROM events").fetchone() == (0,)


def _nested(levels: int) -> list[object]:
    value: list[object] = []
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ({"tags": {"a", "b"}}, "body: not JSON"),  # a set: no JSON for it
        ({"x": float("inf")}, "body: not JSON"),  # strict JSON has no Infinity
        ({"x": float("nan")}, "body: not JSON"),
        ({"deep": _nested(70)}, "nested deeper than 64"),
    ],
)
def test_router_refuses_a_body_no_json_request_could_hold(config_file, db_file, body, complaint):
    # The same promise as `start --body` and `POST /interviews/start`: bad input is refused
    # with VoicefallbackError before anything is called or written.
    with (
        SessionRouter(config=config_file, db=db_file) as router,
        pytest.raises(VoicefallbackError, match=complaint),
    ):
        router.choose("sim", SONNET, body=body, opening_call=True)
    if db_file.exists():
        with sqlite3.connect(db_file) as conn:
            assert conn.execute("SELECT count(*) FROM probes").fetchone() == (0,)
            assert conn.execute("SELECT count(*) FROM events").fetchone() == (0,)


def test_sync_report_changes_what_the_next_choice_sees(config_file, db_file):
    with SessionRouter(config=config_file, db=db_file) as router:
        assert router.choose("s1", "openai:gpt-4o-mini").chosen == "openai:gpt-4o-mini"
        report = router.report("openai:gpt-4o-mini", error="stalled", simulation_id="s1")
        assert report.status == "unhealthy" and report.result.kind == "session"
        # Taken out of rotation by real traffic, before any cron probe.
        nxt = router.choose("s2", "openai:gpt-4o-mini")
        assert nxt.chosen != "openai:gpt-4o-mini" and nxt.reason == "primary_unhealthy"
        with pytest.raises(VoicefallbackError, match=r"^error: unknown kind 'slowish'"):
            router.report("openai:gpt-4o-mini", error="slowish")


@pytest.mark.parametrize(
    ("call", "complaint"),
    [
        (lambda r: r.choose("s", "openai:nope"), "primary: unknown model 'openai:nope'"),
        (lambda r: r.choose("s", SONNET, ["x:y"]), "fallbacks: unknown model 'x:y'"),
        (lambda r: r.choose("", SONNET), "simulation_id: must be a non-empty string"),
        (lambda r: r.choose(None, SONNET), "simulation_id: required (or simulationId in body)"),
        (lambda r: r.choose("s", SONNET, body={"fallbacks": "x"}), "body: fallbacks must be an"),
        (lambda r: r.report("x:y", ttft_ms=5), "model: unknown model 'x:y'"),
        (lambda r: r.report(SONNET), "give ttft_ms (a turn that answered) or error (one that"),
        (lambda r: r.report(SONNET, ttft_ms=-1), "ttft_ms: must be a whole number of millisec"),
        (
            lambda r: r.report(SONNET, error="timeout", latency_ms=5),
            "latency_ms: goes with ttft_ms, not with error",
        ),
        (lambda r: r.report(SONNET, ttft_ms=9, latency_ms=5), "latency_ms: 5 is less than ttft_ms"),
        (lambda r: SessionRouter(mode="fast"), "mode: mode must be 'stub' or 'live', got 'fast'"),
    ],
)
def test_library_messages_name_the_parameters_not_command_line_options(
    config_file, db_file, call, complaint
):
    with (
        SessionRouter(config=config_file, db=db_file) as router,
        pytest.raises(VoicefallbackError) as raised,
    ):
        call(router)
    assert str(raised.value).startswith(complaint)
    assert "--" not in str(raised.value) and "MODEL_ID" not in str(raised.value)


def test_async_router_choose_report_and_reload(config_file, db_file):
    import asyncio

    from voicefallback import AsyncSessionRouter
    from voicefallback.config import load_registry

    async def session() -> None:
        async with AsyncSessionRouter(config=config_file, db=db_file) as router:
            outcomes = await asyncio.gather(
                *(router.choose(f"sim-{i}", SONNET, opening_call=True) for i in range(8))
            )
            assert {o.chosen for o in outcomes} == {"openai:gpt-4o-mini"}
            assert all(o.agent is not None and o.agent.ok for o in outcomes)
            report = await router.report("openai:gpt-4o-mini", ttft_ms=2500, latency_ms=2600)
            assert report.status == "slow"  # over the 1500 ms budget in real traffic
            # models.toml edited: the router takes the new registry without a restart.
            config_file.write_text(config_file.read_text().replace("gpt-4o-mini", "gpt-5-mini"))
            router.reload(load_registry(config_file))
            moved = await router.choose("sim-new", SONNET)
            assert moved.chosen == "openai:gpt-5-mini"

    asyncio.run(session())
    with sqlite3.connect(db_file) as conn:
        simulations = [row[0] for row in conn.execute("SELECT simulation_id FROM events")]
    assert sorted(simulations) == sorted([f"sim-{i}" for i in range(8)] + ["sim-new"])


def test_concurrent_choices_that_find_the_same_stale_model_share_one_probe(
    fake_provider, config_file, db_file, monkeypatch
):
    import asyncio

    from tests.conftest import write_config
    from tests.fake_provider import KEY_ENV, KEYS
    from voicefallback import AsyncSessionRouter

    monkeypatch.setenv(KEY_ENV["openai"], KEYS["openai"])
    write_config(
        config_file,
        f"""
[settings]
mode = "live"
[providers.fake]
type = "openai"
base_url = "{fake_provider.url}/v1"
api_key_env = "{KEY_ENV["openai"]}"
[[models]]
id = "fake:ttft-200"
""",
    )

    async def ten_sessions() -> list[str | None]:
        async with AsyncSessionRouter(config=config_file, db=db_file) as router:
            outcomes = await asyncio.gather(
                *(router.choose(f"s{i}", "fake:ttft-200") for i in range(10))
            )
            return [o.chosen for o in outcomes]

    assert asyncio.run(ten_sessions()) == ["fake:ttft-200"] * 10
    assert len(fake_provider.received("ttft-200")) == 1  # one probe, not ten
    with sqlite3.connect(db_file) as conn:
        assert conn.execute("SELECT count(*) FROM probes").fetchone() == (1,)


def test_a_locked_state_file_never_stalls_the_loop_nor_a_start(config_file, db_file, monkeypatch):
    """Another process holds the state file's write lock: the start's write waits for it on
    the state's thread while the loop goes on (a voice worker's audio, other sessions); past
    connect_timeout_s the start goes on without it ("busy", its write spooled), and the
    write is made, once, when the lock is free."""
    import asyncio
    import time

    from tests.conftest import add_setting
    from voicefallback import AsyncSessionRouter
    from voicefallback.store import statefile

    monkeypatch.setattr(statefile, "BUSY_TIMEOUT_S", 30.0)  # a wait on the loop would show
    add_setting(config_file, "connect_timeout_s = 0.5")

    async def scenario() -> tuple[str | None, str | None, str | None, float]:
        async with AsyncSessionRouter(config=config_file, db=db_file) as router:
            await router.choose("warm", SONNET)  # the state is open
            holder = sqlite3.connect(db_file, isolation_level=None)
            holder.execute("BEGIN IMMEDIATE")
            try:
                locked = asyncio.ensure_future(router.choose("locked", SONNET))
                began = time.monotonic()
                await asyncio.sleep(0.05)
                stalled = time.monotonic() - began  # how long the loop was kept from us
                outcome = await locked
            finally:
                holder.execute("COMMIT")
                holder.close()
            for _ in range(200):  # the thread catches up once the lock is free
                after = await router.choose("after", SONNET)
                if after.degraded is None:
                    break
                await asyncio.sleep(0.05)
            return outcome.chosen, outcome.degraded, after.degraded, stalled

    chosen, degraded, after, stalled = asyncio.run(scenario())
    assert stalled < 10  # not SQLite's busy timeout (30 s here)
    assert chosen == "openai:gpt-4o-mini"
    assert degraded is not None and "busy for over 0.5 s; kept in the spool" in degraded
    assert after is None
    with sqlite3.connect(db_file) as conn:
        written = [row[0] for row in conn.execute("SELECT simulation_id FROM events ORDER BY id")]
    assert written[:2] == ["warm", "locked"] and set(written[2:]) == {"after"}
    assert written.count("locked") == 1


def test_many_starts_through_a_router_keep_the_write_ahead_log_bounded(config_file, db_file):
    """The router's loop connection leaves checkpoints to its thread, which must make them:
    a busy `serve` would otherwise grow the -wal file by about 40 KB a start for ever."""
    import os

    from voicefallback import AsyncSessionRouter

    async def starts(count: int) -> None:
        async with AsyncSessionRouter(config=config_file, db=db_file) as router:
            for index in range(count):
                await router.choose(f"s{index}", SONNET, opening_call=True)
            wal = db_file.with_name(db_file.name + "-wal")
            sizes.append(os.path.getsize(wal))

    import asyncio

    sizes: list[int] = []
    asyncio.run(starts(100))
    asyncio.run(starts(1000))
    # 100 starts write about 1,000 pages (SQLite's own checkpoint interval); 1,000 starts
    # without checkpoints would leave ten times as much.
    assert sizes[1] < 2 * sizes[0]


def test_without_a_write_ahead_log_the_loop_leaves_the_state_file_to_the_thread(
    config_file, db_file, monkeypatch
):
    """A filesystem without WAL keeps the rollback journal, where every commit syncs the
    disk: a start's writes then stay on the router's thread, off the loop."""
    import asyncio
    import threading

    from voicefallback import AsyncSessionRouter
    from voicefallback.store.sqlite import SQLiteStore

    async def starts(names: list[str]) -> None:
        async with AsyncSessionRouter(config=config_file, db=db_file) as router:
            for name in names:
                await router.choose(name, SONNET)

    asyncio.run(starts(["wal"]))
    with sqlite3.connect(db_file) as conn:
        assert conn.execute("PRAGMA journal_mode=DELETE").fetchone() == ("delete",)
    writers: list[str] = []
    write = SQLiteStore._write

    def watched(self: SQLiteStore) -> object:
        writers.append(threading.current_thread().name)
        return write(self)

    monkeypatch.setattr(SQLiteStore, "_write", watched)
    asyncio.run(starts(["s1", "s2", "s3"]))
    assert len(writers) == 3
    assert all(name.startswith("voicefallback-state") for name in writers), writers
    with sqlite3.connect(db_file) as conn:
        written = [row[0] for row in conn.execute("SELECT simulation_id FROM events ORDER BY id")]
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    assert written == ["wal", "s1", "s2", "s3"]


def test_closing_a_router_while_its_first_start_opens_the_state_leaves_nothing_open(
    config_file, db_file, monkeypatch
):
    """A start cancelled while the state's thread opens the state (a server shutting
    down): the connection opened after `aclose` began is closed with the rest."""
    import asyncio
    import time

    from voicefallback import AsyncSessionRouter
    from voicefallback.store import statefile
    from voicefallback.store.sqlite import SQLiteStore

    opened = SQLiteStore.open.__func__  # type: ignore[attr-defined]

    def slowly(cls: type[SQLiteStore], path, **options):  # type: ignore[no-untyped-def]
        time.sleep(0.3)  # still opening when the start is cancelled and aclose begins
        return opened(cls, path, **options)

    monkeypatch.setattr(SQLiteStore, "open", classmethod(slowly))

    async def scenario() -> None:
        router = AsyncSessionRouter(config=config_file, db=db_file)
        start = asyncio.ensure_future(router.choose("cut", SONNET))
        await asyncio.sleep(0.1)
        start.cancel()
        await router.aclose()

    asyncio.run(scenario())
    info = db_file.stat()
    assert (info.st_dev, info.st_ino) not in statefile._connections  # every connection closed


def test_router_refuses_a_simulation_id_that_is_a_configured_key(config_file, db_file, monkeypatch):
    """Stored and shown as given, so never a key: refused before anything is called or
    written, as `start` and `serve` refuse it."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-live-0123456789abcdefghij")
    with SessionRouter(config=config_file, db=db_file) as router:
        for call in (
            lambda: router.choose("sk-live-0123456789abcdefghij", SONNET),
            lambda: router.report(SONNET, ttft_ms=5, simulation_id="sk-live-0123456789abcdefghij"),
        ):
            with pytest.raises(VoicefallbackError, match=r"^simulation_id: looks like an API key"):
                call()
    assert not db_file.exists() or sqlite3.connect(db_file).execute(
        "SELECT count(*) FROM probes"
    ).fetchone() == (0,)
