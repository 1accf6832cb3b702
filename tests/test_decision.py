"""The start decision on real evidence, as fast as the evidence allows, every call recorded once.

Live models are the fake provider's directives (tests/fake_provider.py) through the real SDKs.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

import pytest

from tests.conftest import write_config
from tests.fake_provider import KEY_ENV, KEYS, FakeProvider, fake_registry_file
from tests.fake_provider import call_history as history
from voicefallback import AsyncSessionRouter, SessionRouter

pytest_plugins = ["tests.conftest_live"]

BUDGET_MS = 300


@pytest.fixture(autouse=True)
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV["openai"], KEYS["openai"])


def fake_registry(
    path: Path, fake: FakeProvider, *names: str, stubs: dict[str, str] | None = None
) -> Path:
    return fake_registry_file(path, fake, names, budget_ms=BUDGET_MS, stubs=stubs)


def stub_registry(path: Path, **latency_ms: int) -> Path:
    """A stub-mode registry (budget 1500 ms) of models `p:<name>` answering after the given
    milliseconds."""
    models = "".join(
        f'[[models]]\nid = "p:{name}"\nstub = {{ latency_ms = {ms} }}\n'
        for name, ms in latency_ms.items()
    )
    settings = '[settings]\nmode = "stub"\nttft_budget_ms = 1500\n'
    provider = '[providers.p]\ntype = "openai"\napi_key_env = "P_KEY"\n'
    return write_config(path, settings + provider + models)


def test_a_cold_choice_is_made_at_the_first_content_token_and_the_probe_recorded_later(
    tmp_path, fake_provider
):
    """The probe streams 20 tokens 50 ms apart (1 s in all): the choice does not wait for its
    whole answer, and the probe is still recorded, once, when it ends."""
    config = fake_registry(tmp_path / "m.toml", fake_provider, "ttft-50+tokens-20+gap-50")
    db = tmp_path / "state.db"

    async def scenario() -> tuple[str | None, int, int]:
        async with AsyncSessionRouter(config=config, db=db) as router:
            outcome = await router.choose("s", "fake:ttft-50+tokens-20+gap-50")
            rows_at_choice = len(history(db)) if db.exists() else 0
            unanswered = len(fake_provider.first_token_ms)
        return outcome.chosen, rows_at_choice, unanswered

    chosen, rows_at_choice, heard = asyncio.run(scenario())
    assert chosen == "fake:ttft-50+tokens-20+gap-50"
    assert rows_at_choice == 0 and heard == 1  # decided while the answer was still streaming
    assert history(db) == [("ttft-50+tokens-20+gap-50", "probe", None)]  # recorded once, whole


def test_stub_evidence_never_decides_a_live_start(cli, tmp_path, fake_provider, monkeypatch):
    """A stub probe found the primary 'overloaded' (the stub's pretend error). In live mode
    that is no evidence: the primary is called for real, and no event blames it."""
    config = fake_registry(
        tmp_path / "m.toml", fake_provider, "ok", "ttft-20", stubs={"ok": 'error = "overloaded"'}
    )
    monkeypatch.setenv("VOICEFALLBACK_CONFIG", str(config))
    monkeypatch.setenv("VOICEFALLBACK_DB", str(tmp_path / "state.db"))
    assert cli("probe", "--mode", "stub").exit_code == 0
    assert fake_provider.received() == []
    # `health` says so: in live mode the stub's verdict is no evidence.
    monkeypatch.setenv("VOICEFALLBACK_MODE", "live")
    health = {m["model"]: m["status"] for m in cli("health", "--json").json["models"]}
    assert health == {"fake:ok": "unknown", "fake:ttft-20": "unknown"}
    monkeypatch.setenv("VOICEFALLBACK_MODE", "stub")
    assert cli("health", "fake:ok", "--json").json["models"][0]["status"] == "unhealthy"

    result = cli(
        "start", "--mode", "live", "--simulation-id", "s", "--primary", "fake:ok", "--json"
    )
    assert result.exit_code == 0, result.stderr
    assert result.json["chosen"] == "fake:ok" and result.json["reason"] is None
    assert [r.model for r in fake_provider.received()] == ["ok"]
    assert cli("fallbacks", "--json").json["events"] == []


def test_a_shared_probe_is_recorded_once_when_the_start_that_launched_it_is_cancelled(
    tmp_path, fake_provider
):
    config = fake_registry(tmp_path / "m.toml", fake_provider, "ttft-200", "ttft-20")
    db = tmp_path / "state.db"

    async def scenario() -> tuple[str | None, str | None]:
        async with AsyncSessionRouter(config=config, db=db) as router:
            first = asyncio.ensure_future(router.choose("a", "fake:ttft-200", ["fake:ttft-20"]))
            while not fake_provider.received():
                await asyncio.sleep(0.01)
            second = asyncio.ensure_future(router.choose("b", "fake:ttft-200", ["fake:ttft-20"]))
            await asyncio.sleep(0.05)
            first.cancel()  # the start that launched the probe goes away
            outcome = await second
            with pytest.raises(asyncio.CancelledError):
                await first
        return outcome.chosen, outcome.reason

    chosen, reason = asyncio.run(scenario())
    assert (chosen, reason) == ("fake:ttft-200", None)
    assert [r.model for r in fake_provider.received()] == ["ttft-200"]  # one probe, shared
    assert history(db) == [("ttft-200", "probe", None)]  # recorded once


def test_a_failed_call_is_timed_from_when_its_request_left(tmp_path, fake_provider, monkeypatch):
    """Building the client (here made 400 ms slow) is not the provider's time: the 503 it
    answered at once is recorded as a fast failure."""
    from voicefallback.providers.openai import OpenAIAdapter

    build = OpenAIAdapter._build

    def slow_build(self: OpenAIAdapter, key: str) -> object:
        time.sleep(0.4)
        return build(self, key)

    monkeypatch.setattr(OpenAIAdapter, "_build", slow_build)
    config = fake_registry(tmp_path / "m.toml", fake_provider, "status-503")

    async def scenario() -> list:  # type: ignore[type-arg]
        async with AsyncSessionRouter(config=config, db=tmp_path / "s.db") as router:
            return await router.probe()

    [probed] = asyncio.run(scenario())
    assert probed.result.error == "overloaded"
    assert probed.result.latency_ms is not None and probed.result.latency_ms < 400


def test_a_start_with_the_database_away_calls_no_further_than_the_choice_needs(
    cli, tmp_path, fake_provider, monkeypatch
):
    """With nothing readable every candidate is unknown; the primary answers, so the models
    behind it are never called (not one call per registered model)."""
    config = fake_registry(tmp_path / "m.toml", fake_provider, "ttft-10", "ttft-20", "ttft-30")
    monkeypatch.setenv("VOICEFALLBACK_CONFIG", str(config))
    away = "postgresql://voicefallback@127.0.0.1:9/nowhere?connect_timeout=1"
    result = cli(
        "start", "--db", away, "--simulation-id", "s", "--primary", "fake:ttft-10", "--json"
    )
    assert result.exit_code == 0, result.stderr
    assert result.json["chosen"] == "fake:ttft-10" and result.json.get("degraded") is True
    assert [r.model for r in fake_provider.received()] == ["ttft-10"]


def test_the_http_probe_document_judges_each_model_at_the_time_of_its_evidence(
    tmp_path, fake_provider
):
    """stale_after_s far shorter than the round: a probe that has just succeeded is healthy,
    not stale, in the document the router's probe round gives serve."""
    config = fake_registry(tmp_path / "m.toml", fake_provider, "ttft-10", "ttft-400")
    config.write_text(config.read_text().replace("[settings]", "[settings]\nstale_after_s = 0.1"))

    async def scenario() -> list[str]:
        async with AsyncSessionRouter(config=config, db=tmp_path / "s.db") as router:
            return [p.status for p in await router.probe()]

    assert asyncio.run(scenario()) == ["healthy", "slow"]


def test_a_reloaded_registry_closes_the_connections_of_the_one_it_replaced(tmp_path, fake_provider):
    """Each reload builds a new provider pool; the retired one is closed once its calls end,
    so connections to the provider do not pile up with every reload."""
    from voicefallback.config import load_registry

    config = fake_registry(tmp_path / "m.toml", fake_provider, "ttft-10")

    def connections() -> int:
        """Established TCP connections from this process's side to the fake provider."""
        port = f"{int(fake_provider.url.rsplit(':', 1)[1]):04X}"
        rows = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
        return sum(1 for row in rows if row[3] == "01" and row[2].endswith(f":{port}"))

    async def scenario() -> int:
        async with AsyncSessionRouter(config=config, db=tmp_path / "s.db") as router:
            for index in range(6):
                await router.choose(f"s{index}", "fake:ttft-10", opening_call=True)
                router.reload(load_registry(config))
                await asyncio.sleep(0.05)  # the retired pool closes on the loop
            return connections()

    assert asyncio.run(scenario()) <= 1


def test_entering_a_router_imports_the_sdks_and_builds_the_clients_before_any_session(
    tmp_path, fake_provider
):
    """The first session must not pay for the SDK import (seconds for some SDKs)."""
    import subprocess
    import sys

    config = fake_registry(tmp_path / "m.toml", fake_provider, "ok")
    script = f"""
import asyncio, sys
from voicefallback import AsyncSessionRouter

async def main():
    async with AsyncSessionRouter(config={str(config)!r}, db={str(tmp_path / "s.db")!r}):
        print("openai" in sys.modules)

print("openai" in sys.modules)
asyncio.run(main())
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["False", "True"]
    assert fake_provider.received() == []  # warming makes no call


def test_a_choice_that_joins_a_probe_late_times_it_from_when_the_probe_began(
    tmp_path, fake_provider
):
    """The probe of the slow primary (first token at 1.4 s, budget 1 s) is 0.5 s old when a
    second choice joins it: for that choice too its budget passes at 1 s, so it goes on to
    the healthy fallback instead of taking the slow model for healthy."""
    config = fake_registry(tmp_path / "m.toml", fake_provider, "ttft-1400", "hang", "ok")
    config.write_text(
        config.read_text().replace(f"ttft_budget_ms = {BUDGET_MS}", "ttft_budget_ms = 1000")
    )

    async def scenario() -> tuple[str | None, str | None]:
        async with AsyncSessionRouter(config=config, db=tmp_path / "s.db") as router:
            first = asyncio.ensure_future(router.choose("a", "fake:ttft-1400", ["fake:hang"]))
            while not fake_provider.received():
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.5)
            late = await router.choose("b", "fake:ttft-1400", ["fake:ok"])
            await first
        return late.chosen, late.reason

    assert asyncio.run(scenario()) == ("fake:ok", "primary_unhealthy")


def test_a_router_in_stub_mode_times_a_late_stub_answer_like_start_does(cli, tmp_path):
    """A stub model whose first token comes at twice its budget, and a fast fallback: the
    router's choice and `start` both take the fallback, as a live race would."""
    config = stub_registry(tmp_path / "m.toml", slow=3000, fast=100)
    with SessionRouter(config=config, db=tmp_path / "r.db") as router:
        assert router.choose("s", "p:slow", ["p:fast"]).chosen == "p:fast"
    started = cli(
        "start", "--config", str(config), "--db", str(tmp_path / "c.db"),
        "--simulation-id", "s", "--primary", "p:slow", "--fallback", "p:fast", "--json",
    )  # fmt: skip
    assert started.json["chosen"] == "p:fast"


def test_of_two_late_stub_answers_the_one_that_arrives_first_wins(cli, tmp_path):
    """Budget 1.5 s: the primary's first token at 5 s, the fallback's at 3 s after it was
    started at the primary's budget, so at 4.5 s: the fallback's arrives first, as live."""
    config = stub_registry(tmp_path / "m.toml", a=5000, b=3000)
    started = cli(
        "start", "--config", str(config), "--db", str(tmp_path / "c.db"),
        "--simulation-id", "s", "--primary", "p:a", "--fallback", "p:b", "--json",
    )  # fmt: skip
    assert started.json["chosen"] == "p:b"


def test_a_cancelled_start_still_records_the_calls_that_ended(tmp_path, fake_provider):
    """The primary's 503 came back at once; the start is then cancelled while the fallback
    is slow. The 503 is evidence all the same: the next session must not try it first."""
    config = fake_registry(tmp_path / "m.toml", fake_provider, "status-503", "ttft-3000")
    db = tmp_path / "s.db"

    async def scenario() -> None:
        async with AsyncSessionRouter(config=config, db=db) as router:
            started = asyncio.ensure_future(
                router.choose("s", "fake:status-503", ["fake:ttft-3000"], opening_call=True)
            )
            while len(fake_provider.received()) < 2:
                await asyncio.sleep(0.01)
            started.cancel()
            with pytest.raises(asyncio.CancelledError):
                await started

    asyncio.run(scenario())
    assert history(db) == [("status-503", "start", "overloaded")]


def test_if_older_counts_evidence_of_the_other_mode_as_none(
    cli, tmp_path, fake_provider, monkeypatch
):
    config = fake_registry(tmp_path / "m.toml", fake_provider, "ok")
    monkeypatch.setenv("VOICEFALLBACK_CONFIG", str(config))
    monkeypatch.setenv("VOICEFALLBACK_DB", str(tmp_path / "state.db"))
    assert cli("probe", "--mode", "stub").exit_code == 0
    live = cli("probe", "--mode", "live", "--if-older", "5m", "--json")
    assert [r["model"] for r in live.json["results"]] == ["fake:ok"]
    assert [r.model for r in fake_provider.received()] == ["ok"]


def test_closing_a_router_cuts_its_background_probes_instead_of_waiting_them_out(
    tmp_path, fake_provider
):
    """A model that hangs, probed in the background for a turn's view: closing stops it
    (not evidence: the router stopped, the model did not fail) rather than waiting timeout_s
    for it and recording a timeout."""
    config = fake_registry(tmp_path / "m.toml", fake_provider, "hang")
    db = tmp_path / "s.db"

    async def scenario() -> None:
        async with AsyncSessionRouter(config=config, db=db) as router:
            router.statuses(["fake:hang"])  # never checked: probed in the background
            while not fake_provider.received():
                await asyncio.sleep(0.01)

    asyncio.run(scenario())
    assert history(db) == []


def test_a_read_of_the_state_never_undoes_a_result_this_process_had_meanwhile(
    config_file, tmp_path
):
    """A choice reads the state (its view is over a second old); while that read is on the
    state's thread, a turn fails and is recorded. The read, older, must not put the model
    back to healthy in the view the next turns are ordered by."""
    from voicefallback.records import ProbeResult, utcnow

    model = "openai:gpt-4o-mini"

    async def scenario() -> str:
        async with AsyncSessionRouter(config=config_file, db=tmp_path / "s.db") as router:
            await router.choose("a", model)  # probed: healthy
            await asyncio.sleep(1.1)  # the view is due a read
            choosing = asyncio.ensure_future(router.choose("b", "openai:gpt-4o"))
            await asyncio.sleep(0)  # its read is on the state's thread now
            failed = ProbeResult(model, False, utcnow(), 5, error="overloaded", kind="session")
            router.record_soon([replace(failed, stub=True)])
            await choosing
            return router.statuses([model])[model]

    assert asyncio.run(scenario()) == "unhealthy"
