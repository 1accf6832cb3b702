"""The adapter contract: probe a model, or make a session's opening call.

Adapters are built per provider and reused for every model of that provider in one
command, so a live client (and its connection pool) is built once. SDK modules are
imported only inside the live adapter modules, and only when one is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from voicefallback.config import Model, Provider
from voicefallback.records import ProbeResult


class Adapter(Protocol):
    def probe(self, model: Model) -> ProbeResult:
        """A minimal call measuring time to first token and total time. Never raises."""
        ...

    def open_session(self, model: Model, request: Mapping[str, Any]) -> ProbeResult:
        """The session's opening call (kind="start"), with the opening line in `text`."""
        ...

    def close(self) -> None: ...


class Adapters:
    """One adapter per provider for the length of one command."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self._built: dict[str, Adapter] = {}

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
