"""Live probes and opening calls through the real openai and anthropic SDKs against the fake
provider, and live adapters through the Adapters pool."""

from __future__ import annotations

import asyncio
import threading
import time
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
    make_adapter,
    model_for,
    provider_for,
)
from voicefallback.attempts import Attempt
from voicefallback.config import Model, Provider
from voicefallback.providers import Adapters
from voicefallback.providers.anthropic import AnthropicAdapter
from voicefallback.providers.openai import OpenAIAdapter
from voicefallback.records import ERROR_KINDS, ProbeResult, utcnow
from voicefallback.sessions import opening_call

pytest_plugins = ["tests.conftest_live"]
both = pytest.mark.parametrize("kind", KINDS)


@both
def test_healthy_probe_is_a_minimal_streaming_call(live: Rig, kind: str) -> None:
    result, _ = live.probe(kind, "ok")

    assert result.ok and result.error is None and result.message is None
    assert result.kind == "probe" and result.stub is False
    assert result.ttft_ms is not None and result.latency_ms is not None
    assert result.ttft_ms <= result.latency_ms
    assert (result.input_tokens, result.output_tokens) == (12, 7)
    assert result.text is None  # a probe keeps no text

    [received] = live.fake.received()
    body = received.body
    assert body["model"] == "ok" and body["stream"] is True
    assert "temperature" not in body
    if kind == "openai":
        assert received.path == "/v1/chat/completions"
        # An OpenAI-compatible server (it has a base_url): the limit every such server knows.
        assert body["max_tokens"] == 16 and "max_completion_tokens" not in body
        assert body["stream_options"] == {"include_usage": True}
        assert received.headers["authorization"] == f"Bearer {KEYS[kind]}"
    else:
        assert received.path == "/v1/messages"
        assert body["max_tokens"] == 16
        presented = received.headers.get("x-api-key") or received.headers["authorization"]
        assert KEYS[kind] in presented
        assert received.headers["anthropic-version"]  # the real API refuses a request without
    assert received.headers["x-stainless-retry-count"] == "0"


@both
def test_ttft_is_measured_to_the_first_token_not_the_headers(live: Rig, kind: str) -> None:
    # The fake sends its headers (and, for OpenAI, an empty role chunk) at once.
    result, elapsed = live.probe(kind, "ttft-300")

    assert result.ok
    assert result.ttft_ms is not None and 300 <= result.ttft_ms < 450
    assert result.latency_ms is not None and result.latency_ms >= result.ttft_ms
    assert elapsed < 1.0


@both
def test_latency_runs_to_the_end_of_the_stream(live: Rig, kind: str) -> None:
    result, _ = live.probe(kind, "ttft-100+tokens-4+gap-100")

    assert result.ok
    # The fake sends the first token at 100 ms and the last at 400 ms (lower bounds only: a
    # loaded machine may deliver later, never sooner).
    assert result.ttft_ms is not None and result.ttft_ms >= 100
    assert result.latency_ms is not None and result.latency_ms >= 400


STATUS_CASES = [
    ("status-400", "bad_request", 400, None),
    ("status-401", "auth", 401, None),
    ("status-403", "auth", 403, None),
    ("status-404", "not_found", 404, None),
    ("status-422", "bad_request", 422, None),
    ("status-429", "rate_limited", 429, None),
    ("status-429-retry-7", "rate_limited", 429, 7.0),
    ("status-500", "server_error", 500, None),
    ("status-502-html", "server_error", 502, None),
    ("status-503", "overloaded", 503, None),
    ("status-503-retry-2", "overloaded", 503, 2.0),
    ("status-529", "overloaded", 529, None),
]


@both
@pytest.mark.parametrize(("name", "error", "status", "retry_after"), STATUS_CASES)
def test_error_statuses_are_classified(
    live: Rig, kind: str, name: str, error: str, status: int, retry_after: float | None
) -> None:
    result, elapsed = live.probe(kind, name)

    assert not result.ok
    assert (result.error, result.http_status, result.retry_after_s) == (error, status, retry_after)
    assert result.message is not None and result.message.startswith(f"HTTP {status}")
    assert elapsed < 1.0
    assert len(live.fake.received()) == 1  # max_retries=0: no retry by the SDK


@both
def test_provider_message_is_kept(live: Rig, kind: str) -> None:
    result, _ = live.probe(kind, "status-404")
    expected = "model does not exist" if kind == "openai" else "model: not found"
    assert result.message is not None and expected in result.message


@both
@pytest.mark.parametrize(
    ("name", "stage"),
    [
        ("hang", "no response headers"),
        ("ttft-5000", "no first token"),
        ("stall-mid-stream", "stream stalled"),
        # Comments every 100 ms keep every read short: only a whole-call deadline ends this.
        ("trickle-mid-stream", "stream stalled"),
    ],
)
def test_timeout_bounds_the_whole_probe(live: Rig, kind: str, name: str, stage: str) -> None:
    result, elapsed = live.probe(kind, name, timeout_s=SHORT_TIMEOUT_S)

    assert result.error == "timeout" and not result.ok
    assert result.message is not None and stage in result.message
    assert SHORT_TIMEOUT_S * 0.9 <= elapsed < SHORT_TIMEOUT_S + TIMEOUT_MARGIN_S
    assert result.latency_ms is not None and result.latency_ms >= SHORT_TIMEOUT_S * 900


@both
def test_reset_before_headers_is_a_connection_failure(live: Rig, kind: str) -> None:
    result, elapsed = live.probe(kind, "reset-before-headers")

    assert (result.ok, result.error, result.http_status) == (False, "connection", None)
    assert result.message is not None and "before a response" in result.message
    assert elapsed < 1.0


@both
def test_nothing_listening_is_a_connection_failure(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeProvider() as fake:
        provider = provider_for(fake, kind)
    # The fake is stopped: its port now refuses connections.
    monkeypatch.setenv(KEY_ENV[kind], KEYS[kind])
    adapter = make_adapter(provider)
    try:
        result = adapter.probe(model_for(provider, "ok"))
    finally:
        adapter.close()
    assert result.error == "connection"


@both
@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("cut-mid-stream", "connection dropped mid-stream"),
        ("malformed-chunk", "unparseable stream"),
        ("no-finish", "stream ended without"),
    ],
)
def test_broken_streams_are_bad_responses(live: Rig, kind: str, name: str, says: str) -> None:
    result, elapsed = live.probe(kind, name)

    assert (result.ok, result.error) == (False, "bad_response")
    assert result.message is not None and says in result.message
    assert elapsed < 1.0


def test_openai_truncation_names_the_missing_finish_reason(live: Rig) -> None:
    result, _ = live.probe("openai", "no-finish")
    assert result.message == "stream ended without finish_reason (truncated)"


def test_anthropic_truncation_names_the_missing_message_stop(live: Rig) -> None:
    result, _ = live.probe("anthropic", "no-finish")
    assert result.message == "stream ended without message_stop (truncated)"


def test_anthropic_overload_inside_a_200_stream_is_overloaded(live: Rig) -> None:
    result, _ = live.probe("anthropic", "error-mid-stream")

    assert (result.ok, result.error) == (False, "overloaded")
    assert result.message is not None and "overloaded_error" in result.message


def test_openai_error_object_inside_the_stream_is_a_server_error(live: Rig) -> None:
    result, _ = live.probe("openai", "error-mid-stream")

    assert (result.ok, result.error) == (False, "server_error")
    assert result.message is not None and "error in stream" in result.message


@pytest.mark.parametrize("name", ["no-done", "no-done-hold"])
def test_openai_stream_without_done_line_is_a_success_without_waiting(live: Rig, name: str) -> None:
    # no-done-hold: complete, but the body never ends and the connection stays open.
    result, elapsed = live.probe("openai", name, timeout_s=5.0)

    assert result.ok and result.output_tokens == 7
    assert elapsed < 1.0


@both
def test_a_drop_after_the_proper_end_still_counts_as_complete(live: Rig, kind: str) -> None:
    result, _ = live.probe(kind, "cut-after-end")
    assert result.ok and result.output_tokens == 7


@both
def test_reasoning_without_visible_text_is_a_success_without_ttft(live: Rig, kind: str) -> None:
    result, _ = live.probe(kind, "think-only")

    assert result.ok and result.error is None
    assert result.ttft_ms is None
    assert result.latency_ms is not None
    assert result.output_tokens == 16


@both
def test_a_refused_key_never_appears_in_the_result(
    kind: str, fake_provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = f"{KEYS[kind]}-but-wrong-XYZ"
    monkeypatch.setenv("VF_TEST_WRONG_KEY", secret)
    provider = provider_for(fake_provider, kind, key_env="VF_TEST_WRONG_KEY")
    adapter = make_adapter(provider)
    try:
        result = adapter.probe(model_for(provider, "ok"))
    finally:
        adapter.close()

    # The fake echoes the key it was given in its 401 message, as careless gateways do.
    assert result.error == "auth" and result.http_status == 401
    assert result.message is not None and "[REDACTED]" in result.message
    assert secret not in repr(result) and secret[:20] not in repr(result)


@both
def test_missing_key_makes_no_request(
    kind: str, fake_provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VF_TEST_UNSET_KEY", raising=False)
    provider = provider_for(fake_provider, kind, key_env="VF_TEST_UNSET_KEY")
    adapter = make_adapter(provider)
    try:
        result = adapter.probe(model_for(provider, "ok"))
        session = adapter.open_session(model_for(provider, "ok"), {"simulationId": "s"})
    finally:
        adapter.close()

    assert (result.ok, result.error, result.kind) == (False, "missing_key", "probe")
    assert result.message is not None and "VF_TEST_UNSET_KEY" in result.message
    assert (session.error, session.kind) == ("missing_key", "start")
    assert fake_provider.received() == []


@both
def test_every_failure_kind_is_a_spec_kind(live: Rig, kind: str) -> None:
    names = ["status-418", "status-504", "status-409", "malformed-chunk", "reset-before-headers"]
    for name in names:
        result, _ = live.probe(kind, name)
        assert not result.ok and result.error in ERROR_KINDS, (name, result)


def test_openai_itself_gets_max_completion_tokens(
    fake_provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No base_url: OpenAI itself, reached here through the SDK's own OPENAI_BASE_URL.
    monkeypatch.setenv("OPENAI_BASE_URL", f"{fake_provider.url}/v1")
    monkeypatch.setenv(KEY_ENV["openai"], KEYS["openai"])
    provider = Provider(name="openai", type="openai", api_key_env=KEY_ENV["openai"])
    adapter = make_adapter(provider)
    try:
        result = adapter.probe(model_for(provider, "ok"))
        fallback = adapter.probe(model_for(provider, "reject-max_completion_tokens"))
    finally:
        adapter.close()

    assert result.ok and fallback.ok
    first, second, third = (r.body for r in fake_provider.received())
    assert first["max_completion_tokens"] == 16 and "max_tokens" not in first
    assert "temperature" not in first
    assert "max_completion_tokens" in second  # refused ...
    assert third["max_tokens"] == 16 and "max_completion_tokens" not in third  # ... swapped


def test_refused_optional_parameters_are_swapped_or_dropped_once(live: Rig) -> None:
    name = "reject-max_tokens+reject-stream_options"
    result, _ = live.probe("openai", name)
    assert result.ok

    first, second, third = (r.body for r in live.fake.received())
    assert "max_tokens" in first
    # Refused with "Unsupported parameter: 'max_tokens' ... Use 'max_completion_tokens'".
    assert "max_completion_tokens" in second and "stream_options" in second
    assert "max_completion_tokens" in third and "stream_options" not in third

    live.fake.clear()
    again, _ = live.probe("openai", name)
    assert again.ok and len(live.fake.received()) == 1  # remembered for this model


def test_a_400_naming_no_optional_parameter_is_not_retried(live: Rig) -> None:
    result, _ = live.probe("openai", "status-400")
    assert result.error == "bad_request" and len(live.fake.received()) == 1


def test_groq_usage_inside_x_groq_is_recorded(live: Rig) -> None:
    result, _ = live.probe("openai", "groq-usage")
    assert result.ok and (result.input_tokens, result.output_tokens) == (12, 7)


@both
def test_a_closed_adapter_reports_instead_of_raising(
    kind: str, fake_provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    from voicefallback.providers.anthropic import AnthropicAdapter
    from voicefallback.providers.openai import OpenAIAdapter

    monkeypatch.setenv(KEY_ENV[kind], KEYS[kind])
    provider = provider_for(fake_provider, kind)
    adapter = AnthropicAdapter(provider) if kind == "anthropic" else OpenAIAdapter(provider)

    async def closed_then_called() -> ProbeResult:
        await adapter.prepare()
        await adapter.aclose()
        await adapter.aclose()  # twice is fine
        model = model_for(provider, "ok")
        return await adapter.probe(model, Attempt(model, "probe"))

    result = asyncio.run(closed_then_called())
    assert not result.ok and result.error in ERROR_KINDS
    assert fake_provider.received() == []


def test_keyless_local_server_is_called_without_a_key_variable(fake_provider: FakeProvider) -> None:
    provider = provider_for(fake_provider, "openai")
    provider = type(provider)(name="local", type="openai", base_url=provider.base_url)
    adapter = make_adapter(provider)
    try:
        result = adapter.probe(model_for(provider, "ok"))
    finally:
        adapter.close()

    assert result.error != "missing_key"
    [received] = fake_provider.received()
    assert received.headers["authorization"] == "Bearer no-key"


def test_timeouts_of_concurrent_probes_do_not_add_up(live: Rig) -> None:
    names = [f"hang+n{i}" for i in range(6)] + [f"stall-mid-stream+n{i}" for i in range(6)]
    models = [live.model("openai", n, timeout_s=SHORT_TIMEOUT_S) for n in names]
    pool = live.adapters["openai"]
    began = time.perf_counter()

    async def at_once() -> list[ProbeResult]:
        return list(await asyncio.gather(*map(pool.adapter.probe, models)))

    results = pool.run(at_once())
    elapsed = time.perf_counter() - began

    assert [r.error for r in results] == ["timeout"] * len(names)
    assert elapsed < SHORT_TIMEOUT_S + TIMEOUT_MARGIN_S


# -- opening calls, and live adapters through the Adapters pool ----------------------------


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
def test_opening_call_without_any_text_is_judged_like_a_probe(live: Rig, kind: str) -> None:
    """A reasoning model that spent its tokens thinking answered, properly ended: a success
    judged on its total time (no first token), as the same answer to a probe is."""
    result = live.adapters[kind].open_session(live.model(kind, "think-only"), REQUEST)
    probe, _ = live.probe(kind, "think-only")

    assert (result.ok, result.error, result.kind, result.ttft_ms) == (True, None, "start", None)
    assert result.latency_ms is not None and not result.text
    assert (probe.ok, probe.ttft_ms) == (True, None)


@both
def test_opening_call_is_bounded_by_the_timeout(live: Rig, kind: str) -> None:
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
    # Lower bounds only: how close the figures stay to the truth under concurrency is
    # measured by benchmarks/live_probe_ttft.py, with the fake in its own process.
    assert len(ttfts) == 50 and min(ttfts) >= 200
    assert len(fake_provider.received()) == 50


@both
def test_sdk_client_is_built_off_the_event_loop_and_works_on_it(
    kind: str, fake_provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Building the client loads TLS certificates (tens of ms): on the loop it would stall a
    # voice worker's audio at a router's first call, and again after every reload.
    monkeypatch.setenv(KEY_ENV[kind], KEYS[kind])
    provider = provider_for(fake_provider, kind)
    base = AnthropicAdapter if kind == "anthropic" else OpenAIAdapter
    built_on: list[int] = []

    class Watched(base):  # type: ignore[valid-type,misc]
        def _build(self, key: str) -> Any:
            built_on.append(threading.get_ident())
            return super()._build(key)

    async def first_use() -> tuple[int, ProbeResult]:
        adapter = Watched(provider)
        try:
            model = model_for(provider, "ok")
            return threading.get_ident(), await adapter.probe(model, Attempt(model, "probe"))
        finally:
            await adapter.aclose()

    loop_thread, result = asyncio.run(first_use())
    assert result.ok, result.message
    assert len(built_on) == 1 and built_on[0] != loop_thread


@both
def test_a_fastapi_style_detail_is_kept_as_the_message(live: Rig, kind: str) -> None:
    """vLLM and proxies answer {"detail": "Not Found"}: the server's words, not the SDK's."""
    result, _ = live.probe(kind, "status-404-detail")
    assert result.error == "not_found" and result.http_status == 404
    assert result.message == "HTTP 404: Not Found"


def test_concurrent_calls_start_in_turns_so_the_loop_runs_between_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 50 calls made at once must not all start in one pass of the event loop: each start is
    # CPU work (the SDK building a request), and a voice worker's audio waits for the pass.
    passes = 0
    started_in_pass: list[int] = []

    class Recording:
        async def prepare(self) -> None:
            pass

        async def probe(self, model: Model, attempt: Any) -> ProbeResult:
            started_in_pass.append(passes)
            await asyncio.sleep(0.01)
            return ProbeResult(model.id, True, utcnow(), 10, 10)

        async def open_session(self, model: Model, opening: Any, attempt: Any) -> ProbeResult:
            started_in_pass.append(passes)
            await asyncio.sleep(0.01)
            return ProbeResult(model.id, True, utcnow(), 10, 10, kind="start", text="Hi")

        async def aclose(self) -> None:
            pass

    monkeypatch.setattr("voicefallback.providers._build", lambda provider, mode: Recording())
    provider = Provider(name="p", type="openai", api_key_env=None, base_url="http://127.0.0.1:9")
    models = [model_for(provider, f"m{i}") for i in range(50)]

    async def at_once() -> list[ProbeResult]:
        nonlocal passes
        done = False

        async def count_passes() -> None:
            nonlocal passes
            while not done:
                await asyncio.sleep(0)  # resumes once per pass of the loop
                passes += 1

        counter = asyncio.ensure_future(count_passes())
        async with Adapters("live") as adapters:
            calls = [adapters.probe(m) for m in models[:25]]
            calls += [adapters.open_session(m, opening_call(REQUEST)) for m in models[25:]]
            results = list(await asyncio.gather(*calls))
        done = True
        await counter
        return results

    results = asyncio.run(at_once())
    assert all(r.ok for r in results) and len(results) == 50
    assert len(started_in_pass) == 50
    assert len(set(started_in_pass)) == 50, "several calls started in one pass of the loop"
