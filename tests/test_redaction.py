"""Secrets never survive redaction: configured key values and anything shaped like a key."""

from __future__ import annotations

import pytest

from voicefallback.environment import secrets_from_env
from voicefallback.redaction import REDACTED, redact


def test_literal_key_values_are_removed_whatever_their_shape() -> None:
    secret = "a1b2c3d4e5f6-custom-gateway-token"
    assert redact(f"rejected {secret} (twice: {secret})", [secret]) == (
        f"rejected {REDACTED} (twice: {REDACTED})"
    )


def test_longer_secrets_go_first_so_no_tail_is_left() -> None:
    short, long = "tok-123456", "tok-123456-extended"
    assert redact(f"key {long}", [short, long]) == f"key {REDACTED}"


@pytest.mark.parametrize(
    "key",
    [
        "sk-abcdefghijklmnop1234",
        "sk-proj-Abc_def-1234567890",
        "sk-ant-api03-AbCdEf_123-xyz",
        "sk-abc***************wxyz",  # OpenAI's masked echo still shows a prefix
        "gsk_0123456789abcdefABCDEF",
        "xai-0123456789abcdef",
    ],
)
def test_key_shaped_strings_are_removed_without_being_configured(key: str) -> None:
    out = redact(f"Incorrect API key provided: {key}.")
    assert key not in out and REDACTED in out
    assert out.startswith("Incorrect API key provided: ")


def test_bearer_tokens_and_url_credentials_are_removed() -> None:
    text = "sent Authorization: Bearer abc.DEF-123_xyz to https://user:p4ss@gw.example/v1"
    out = redact(text)
    assert "abc.DEF-123_xyz" not in out and "p4ss" not in out
    assert out == f"sent Authorization: Bearer {REDACTED} to https://{REDACTED}@gw.example/v1"


def test_ordinary_words_survive() -> None:
    text = "risk-assessment task-1234 desk-lamp: HTTP 429 rate limited, retry in 7 s"
    assert redact(text, ["", None, "   "]) == text  # empty and blank values are no key


def test_a_short_key_is_redacted_too_and_leaves_no_tail_of_a_longer_one() -> None:
    """Issue 9's own example: keys `sk-a` and `sk-a-TAIL` configured side by side."""
    keys = ["sk-a", "sk-a-TAIL"]
    assert redact("Incorrect API key provided: sk-a", keys) == (
        f"Incorrect API key provided: {REDACTED}"
    )
    assert redact("Incorrect API key provided: sk-a-TAIL.", keys) == (
        f"Incorrect API key provided: {REDACTED}."
    )


def test_redaction_is_idempotent() -> None:
    once = redact("key sk-ant-api03-secretsecret and Bearer zzzzzzzz", ["secretsecret"])
    assert redact(once, ["secretsecret"]) == once


def test_secrets_from_env_reads_only_set_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VF_TEST_KEY_A", "value-a-123456")
    monkeypatch.setenv("VF_TEST_KEY_EMPTY", "")
    monkeypatch.delenv("VF_TEST_KEY_UNSET", raising=False)
    names = ["VF_TEST_KEY_A", "VF_TEST_KEY_EMPTY", "VF_TEST_KEY_UNSET", None]
    assert secrets_from_env(names) == ["value-a-123456"]


def test_every_configured_key_is_redacted_from_any_providers_message(monkeypatch) -> None:
    """A gateway echoing another provider's key must not leak it: the adapter pool redacts
    every configured key from every result, not only the calling provider's own."""
    import asyncio
    from datetime import UTC, datetime

    from voicefallback.config import Model, Provider, Thresholds
    from voicefallback.providers import Adapters
    from voicefallback.records import ProbeResult

    monkeypatch.setenv("OTHER_GATEWAY_TOKEN", "gw-token-0f1e2d3c4b5a")
    provider = Provider(name="p", type="openai", api_key_env="P_KEY")
    model = Model(id="p:m", provider=provider, name="m", thresholds=Thresholds())

    class Echoing:
        async def prepare(self) -> None:
            pass

        async def probe(self, model: Model, *_: object) -> ProbeResult:
            return ProbeResult(
                model=model.id,
                ok=False,
                at=datetime.now(UTC),
                error="auth",
                message="upstream said: bad token gw-token-0f1e2d3c4b5a",
            )

        async def open_session(self, model: Model, *_: object) -> ProbeResult:
            return await self.probe(model)

        async def aclose(self) -> None:
            pass

    async def both_calls() -> list[ProbeResult]:
        adapters = Adapters("live", ["P_KEY", "OTHER_GATEWAY_TOKEN"])
        adapters._built["p"] = Echoing()
        return [await adapters.probe(model), await adapters.open_session(model, {})]

    for result in asyncio.run(both_calls()):
        assert result.message == f"upstream said: bad token {REDACTED}"


def test_a_key_that_is_a_prefix_of_another_leaves_no_tail(monkeypatch) -> None:
    """`sk-a…` and `sk-a…-TAIL`: a live adapter leaves redaction to the pool, which redacts
    once with every key, longest first, so no `[REDACTED]-TAIL` is stored or printed."""
    import asyncio

    from voicefallback.attempts import Attempt
    from voicefallback.config import Model, Provider, Thresholds
    from voicefallback.providers import Adapters

    short = "shortkey-0123456789"
    monkeypatch.setenv("OPENAI_API_KEY", short)
    monkeypatch.setenv("ANTHROPIC_API_KEY", short + "-TAILSECRET")
    provider = Provider(name="p", type="openai", api_key_env="OPENAI_API_KEY")
    model = Model(id="p:m", provider=provider, name="m", thresholds=Thresholds())

    class Echoing:
        async def prepare(self) -> None:
            pass

        async def probe(self, model: Model, attempt: Attempt) -> object:
            # What a live call builds from a gateway's message naming the other key.
            return attempt.failure("auth", f"bad key {short}-TAILSECRET")

        async def aclose(self) -> None:
            pass

    async def probed() -> object:
        adapters = Adapters("live", ["OPENAI_API_KEY", "ANTHROPIC_API_KEY"])
        adapters._built["p"] = Echoing()
        return await adapters.probe(model)

    result = asyncio.run(probed())
    assert result.message == f"bad key {REDACTED}"  # type: ignore[attr-defined]


def test_a_key_with_whitespace_around_it_is_redacted_as_sent_and_as_set(monkeypatch) -> None:
    """The key is sent stripped (a CRLF env file leaves a \\r), so both forms must go."""
    monkeypatch.setenv("VF_TEST_KEY_CR", "gw-token-0f1e2d3c4b5a\r")
    monkeypatch.setenv("VF_TEST_KEY_BLANK", "      ")
    secrets = secrets_from_env(["VF_TEST_KEY_CR", "VF_TEST_KEY_BLANK"])
    assert sorted(secrets) == ["gw-token-0f1e2d3c4b5a", "gw-token-0f1e2d3c4b5a\r"]
    assert redact("upstream said: bad token gw-token-0f1e2d3c4b5a.", secrets) == (
        f"upstream said: bad token {REDACTED}."
    )
    assert redact("a\r\nb      c", secrets) == "a\r\nb      c"  # blanks are no secret


@pytest.mark.parametrize("value", ["   ", "\r\n", ""])
def test_a_blank_key_is_missing_everywhere_it_is_read(cli, monkeypatch, value) -> None:
    """`models` and a live probe agree: a variable holding only whitespace holds no key."""
    monkeypatch.setenv("OPENAI_API_KEY", value)
    listed = cli("models", "--json").json["models"]
    assert [m["apiKeySet"] for m in listed if m["apiKeyEnv"] == "OPENAI_API_KEY"] == [False] * 2
    probed = cli("probe", "--mode", "live", "--json", "openai:gpt-4o-mini")
    assert probed.json["results"][0]["error"] == "missing_key"  # no request was sent


def test_a_key_with_a_trailing_carriage_return_counts_as_set(cli, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-0123456789abcdef\r")
    listed = cli("models", "--json").json["models"]
    assert listed[0]["apiKeyEnv"] == "OPENAI_API_KEY" and listed[0]["apiKeySet"] is True


def test_error_lines_never_show_anything_shaped_like_a_key(cli, db_file) -> None:
    """print_error is the last stop before stderr: a key pasted where an id belongs."""
    pasted = "sk-proj-Abc123def456GHI789jkl012"
    result = cli("probe", f"openai:{pasted}")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "MODEL_ID: unknown model 'openai:[REDACTED]'" in result.stderr
    assert "Abc123def456" not in result.stderr
    assert not db_file.exists()


def test_a_short_key_is_redacted_only_where_it_stands_as_a_whole_token() -> None:
    """`WALL_KEY=x`, as set for a local server that needs no key: words keep their x's."""
    message = "stream stalled after 20 text chunks; key x rejected (x)"
    assert redact(message, ["x"]) == (
        f"stream stalled after 20 text chunks; key {REDACTED} rejected ({REDACTED})"
    )
    assert redact("none-such nonesuch none.", ["none"]) == f"none-such nonesuch {REDACTED}."


@pytest.mark.parametrize(
    ("line", "kept"),
    [
        ("GET /health?token=tok-123&model=m HTTP/1.1", "GET /health?token=[REDACTED]&model=m"),
        ("GET /health?model=m&api_key=abc HTTP/1.1", "GET /health?model=m&api_key=[REDACTED]"),
        ("POST /v1/?api-key=abc&x=1", "POST /v1/?api-key=[REDACTED]&x=1"),
        ("GET /?KEY=abc", "GET /?KEY=[REDACTED]"),
    ],
)
def test_credential_query_parameters_lose_their_values(line: str, kept: str) -> None:
    out = redact(line)
    assert out.startswith(kept) and "abc" not in out and "tok-123" not in out


def test_a_base_url_with_a_query_string_is_refused_without_repeating_it(cli, config_file) -> None:
    secret = "gw-0123456789abcdef"
    text = config_file.read_text().replace(
        'type = "openai"', f'type = "openai"\nbase_url = "https://gw.example/v1?api-key={secret}"'
    )
    config_file.write_text(text)
    for args in (["models", "--json"], ["start", "--simulation-id", "s", "--primary", "x:y"]):
        refused = cli(*args)
        assert refused.exit_code == 2 and refused.stdout == ""
        assert (
            refused.stderr.count("\n") == 1 and "base_url must not have a query" in refused.stderr
        )
        assert secret not in refused.stderr


@pytest.mark.parametrize(
    "url",
    [
        "https://sk-proj-0123456789abcdefghij.example/v1",  # a key pasted as the host
        "https://gw.example/sk-proj-0123456789abcdefghij/v1",
    ],
)
def test_a_base_url_holding_a_key_shaped_part_is_refused_and_never_printed(
    cli, config_file, url
) -> None:
    config_file.write_text(
        config_file.read_text().replace('type = "openai"', f'type = "openai"\nbase_url = "{url}"')
    )
    refused = cli("models", "--json")
    assert refused.exit_code == 2 and refused.stdout == ""
    assert "shaped like an API key" in refused.stderr
    assert "0123456789abcdefghij" not in refused.stderr


def test_a_simulation_id_equal_to_a_key_is_refused_and_nothing_written(
    cli, db_file, monkeypatch
) -> None:
    key = "gw-token-0f1e2d3c4b5a"  # a configured key of no recognisable shape
    monkeypatch.setenv("OPENAI_API_KEY", key)
    for simulation_id in (key, "sk-proj-0123456789abcdefghij"):
        refused = cli("start", "--simulation-id", simulation_id, "--primary", "openai:gpt-4o-mini")
        assert refused.exit_code == 2 and refused.stdout == ""
        assert refused.stderr.count("\n") == 1 and "--simulation-id: looks like" in refused.stderr
        assert simulation_id not in refused.stderr
    refused = cli("report", "openai:gpt-4o-mini", "--ttft-ms", "400", "--simulation-id", key)
    assert refused.exit_code == 2 and "--simulation-id: looks like" in refused.stderr
    assert not db_file.exists()
    assert (
        cli("start", "--simulation-id", "sim-1", "--primary", "openai:gpt-4o-mini").exit_code == 0
    )


def test_opening_text_that_echoes_the_key_is_redacted_in_json_and_the_panel(
    cli, config_file, monkeypatch
) -> None:
    """A gateway that repeats the key it was sent: `agent.text` is provider-supplied text."""
    from tests.conftest import write_config
    from tests.fake_provider import FakeProvider

    key = "gw-token-0f1e2d3c4b5a"
    monkeypatch.setenv("GW_KEY", key)
    with FakeProvider(keys=(key,)) as fake:
        write_config(
            config_file,
            f"""
[settings]
mode = "live"
[providers.gw]
type = "openai"
base_url = "{fake.url}/v1"
api_key_env = "GW_KEY"
[[models]]
id = "gw:echo-key"
""",
        )
        started = cli("start", "--simulation-id", "s", "--primary", "gw:echo-key", "--json")
        assert started.exit_code == 0, started.stderr
        assert started.json["agent"]["text"] == f"Your key is {REDACTED}."
        panel = cli("start", "--simulation-id", "s", "--primary", "gw:echo-key")
        assert panel.exit_code == 0 and "Your key is" in panel.stdout
        assert key not in panel.stdout + panel.stderr + started.stdout
