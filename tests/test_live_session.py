"""A session's opening call in live mode, and live adapters through the Adapters pool."""

from __future__ import annotations

import asyncio
import statistics
from typing import Any

import pytest

from tests.fake_provider import (
    DEFAULT_TEXT,
    KEY_ENV,
    KEYS,
    KINDS,
    SHORT_TIMEOUT_S,
    TIMEOUT_MARGIN_S,
    FakeProvider,
    Rig,
    model_for,
    provider_for,
)
from voicefallback.providers import Adapters
from voicefallback.providers.anthropic import AnthropicAdapter
from voicefallback.providers.openai import OpenAIAdapter
from voicefallback.records import ProbeResult

pytest_plugins = ["tests.conftest_live"]
both = pytest.mark.parametrize("kind", KINDS)
REQUEST = {
    "simulationId": "sim-42",
    "primary": "openai:gpt-4o-mini",
    "fallbacks": ["anthropic:claude-3-5-sonnet-latest"],
    "candidateName": "Ada",
    "role": "backend engineer",
}


@both
def test_opening_call_returns_the_interviewers_line(live: Rig, kind: str) -> None:
    result = live.adapters[kind].open_session(live.model(kind, "ttft-50"), REQUEST)

    assert result.ok and result.kind == "start" and result.stub is False
    assert result.text == "".join(DEFAULT_TEXT)
    assert result.ttft_ms is not None and result.ttft_ms >= 50
    assert result.latency_ms is not None and result.latency_ms >= result.ttft_ms


@both
def test_opening_prompt_is_built_from_the_request(live: Rig, kind: str) -> None:
    live.adapters[kind].open_session(live.model(kind, "ok"), REQUEST)

    [received] = live.fake.received()
    body = received.body
    assert body["stream"] is True
    if kind == "openai":
        system, user = body["messages"]
        assert system["role"] == "system" and user["role"] == "user"
        prompt = system["content"]
        assert body["max_tokens"] == 200
    else:
        prompt = body["system"]
        assert [m["role"] for m in body["messages"]] == ["user"]
        assert body["max_tokens"] == 200
    assert "sim-42" in prompt and "Ada" in prompt and "backend engineer" in prompt
    assert "opening line" in prompt
    assert "gpt-4o-mini" not in prompt  # routing keys are not the model's business


@both
def test_failed_opening_call_is_reported_not_raised(live: Rig, kind: str) -> None:
    result = live.adapters[kind].open_session(live.model(kind, "status-503"), REQUEST)

    assert (result.ok, result.error, result.kind, result.http_status) == (
        False,
        "overloaded",
        "start",
        503,
    )
    assert result.text is None


@both
def test_opening_call_without_any_text_is_a_failure(live: Rig, kind: str) -> None:
    # Dead air: a reasoning model that spent its tokens thinking has nothing to say.
    result = live.adapters[kind].open_session(live.model(kind, "think-only"), REQUEST)

    assert (result.ok, result.error, result.kind) == (False, "bad_response", "start")


@both
def test_opening_call_is_bounded_by_the_timeout(live: Rig, kind: str) -> None:
    import time

    began = time.perf_counter()
    model = live.model(kind, "stall-mid-stream", timeout_s=SHORT_TIMEOUT_S)
    result = live.adapters[kind].open_session(model, REQUEST)

    assert (result.error, result.kind) == ("timeout", "start")
    assert time.perf_counter() - began < SHORT_TIMEOUT_S + TIMEOUT_MARGIN_S


@both
def test_adapters_pool_builds_one_live_adapter_per_provider(
    kind: str, fake_provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV[kind], KEYS[kind])
    provider = provider_for(fake_provider, kind)
    models = [model_for(provider, f"ok+m{i}") for i in range(3)]

    async def three_models() -> tuple[set[int], Any, list[ProbeResult]]:
        async with Adapters("live") as adapters:
            await adapters.prepare(models)
            built = {id(await adapters.for_model(m)) for m in models}
            first = await adapters.for_model(models[0])
            return built, first, list(await asyncio.gather(*map(adapters.probe, models)))

    built, first, results = asyncio.run(three_models())
    assert len(built) == 1
    assert isinstance(first, AnthropicAdapter if kind == "anthropic" else OpenAIAdapter)
    assert all(r.ok for r in results)
    assert len(fake_provider.received()) == 3


def test_fifty_concurrent_streams_are_measured_faithfully(
    fake_provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fake shares this process (and its GIL) here; benchmarks/live_probe_ttft.py measures
    # with the server in its own process.
    monkeypatch.setenv(KEY_ENV["openai"], KEYS["openai"])
    provider = provider_for(fake_provider, "openai")
    models = [model_for(provider, f"ttft-200+m{i:02d}") for i in range(50)]

    async def fifty() -> list[ProbeResult]:
        async with Adapters("live", concurrency=16) as adapters:
            await adapters.prepare(models)
            return list(await asyncio.gather(*map(adapters.probe, models)))

    results = asyncio.run(fifty())
    assert all(r.ok for r in results), [r.message for r in results if not r.ok]
    ttfts = [r.ttft_ms for r in results if r.ttft_ms is not None]
    assert len(ttfts) == 50 and min(ttfts) >= 200
    assert statistics.median(ttfts) <= 250
    assert len(fake_provider.received()) == 50
