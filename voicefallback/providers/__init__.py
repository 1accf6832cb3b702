"""The adapter contract: probe a model, or make a session's opening call.

Adapters are built per provider and reused for every model of that provider in one
command, so a live client (and its connection pool) is built once. SDK modules are
imported only inside the live adapter modules, and only when one is built.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any, Protocol

from voicefallback.config import Model, Provider
from voicefallback.records import ProbeResult
from voicefallback.redaction import redact, secrets_from_env


class Adapter(Protocol):
    def probe(self, model: Model) -> ProbeResult:
        """A minimal call measuring time to first token and total time. Never raises."""
        ...

    def open_session(self, model: Model, request: Mapping[str, Any]) -> ProbeResult:
        """The session's opening call (kind="start"), with the opening line in `text`."""
        ...

    def close(self) -> None: ...


class Adapters:
    """One adapter per provider for the length of one command.

    Calls go through `probe` and `open_session` here, which redact every configured key
    (not only the calling provider's) from the provider's message before anyone stores or
    prints it.
    """

    def __init__(self, mode: str, key_env_names: Iterable[str | None] = ()) -> None:
        self.mode = mode
        self._secrets = secrets_from_env(key_env_names)
        self._built: dict[str, Adapter] = {}

    def probe(self, model: Model) -> ProbeResult:
        return self._redacted(self.for_model(model).probe(model))

    def open_session(self, model: Model, request: Mapping[str, Any]) -> ProbeResult:
        return self._redacted(self.for_model(model).open_session(model, request))

    def _redacted(self, result: ProbeResult) -> ProbeResult:
        if result.message is None:
            return result
        return replace(result, message=redact(result.message, self._secrets))

    def for_model(self, model: Model) -> Adapter:
        provider = model.provider
        if provider.name not in self._built:
            self._built[provider.name] = _build(provider, self.mode)
        return self._built[provider.name]

    def prepare(self, models: list[Model]) -> None:
        """Build adapters up front, so one-time costs are not timed as provider latency."""
        for model in models:
            self.for_model(model)

    def close(self) -> None:
        for adapter in self._built.values():
            adapter.close()
        self._built.clear()

    def __enter__(self) -> Adapters:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _build(provider: Provider, mode: str) -> Adapter:
    if mode == "stub":
        from voicefallback.providers.stub import StubAdapter

        return StubAdapter()
    if provider.type == "anthropic":
        from voicefallback.providers.anthropic import AnthropicAdapter

        adapter: Adapter = AnthropicAdapter(provider)
        return adapter
    from voicefallback.providers.openai import OpenAIAdapter

    adapter = OpenAIAdapter(provider)
    return adapter
