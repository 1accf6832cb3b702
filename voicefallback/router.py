"""The library entry point: the same choice `start` makes, without a process per session."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from voicefallback.config import config_path, db_path, load_registry, resolve_mode
from voicefallback.providers import Adapters
from voicefallback.sessions import StartOutcome, build_request, route_session, validate_request
from voicefallback.store import open_store


class SessionRouter:
    """Keeps the registry, the state file and provider clients open for a voice worker.

    >>> router = SessionRouter(config="models.toml")
    >>> outcome = router.choose("sim-1", "anthropic:claude-3-5-sonnet-latest")
    >>> outcome.chosen, outcome.reason
    ('openai:gpt-4o-mini', 'primary_unhealthy')

    Paths and mode resolve as on the command line (argument, then environment, then
    default). Not thread-safe: use one router per thread.
    """

    def __init__(
        self,
        config: str | Path | None = None,
        db: str | Path | None = None,
        mode: str | None = None,
    ) -> None:
        self.registry = load_registry(config_path(Path(config) if config else None))
        self.mode = resolve_mode(mode, self.registry)
        self._store = open_store(
            db_path(db or None), write=True, connect_timeout_s=self.registry.connect_timeout_s
        )
        self._adapters = Adapters(self.mode, self.registry.key_env_names())

    def choose(
        self,
        simulation_id: str,
        primary: str,
        fallbacks: Sequence[str] = (),
        *,
        body: Mapping[str, Any] | None = None,
        opening_call: bool = False,
        record_event: bool = True,
    ) -> StartOutcome:
        """Pick the model a session should start on and record why, like `start`.

        By default no opening call is made: the worker calls `outcome.chosen` itself.
        With `opening_call=True` this is exactly `voicefallback start`.
        """
        request = build_request(body or {}, simulation_id, primary, list(fallbacks))
        validate_request(self.registry, request)
        return route_session(
            self.registry,
            self._store,
            self._adapters,
            request,
            opening_call=opening_call,
            record_event=record_event,
        )

    def close(self) -> None:
        self._adapters.close()
        self._store.close()

    def __enter__(self) -> SessionRouter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
