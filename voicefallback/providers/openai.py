"""Live calls through the official openai SDK: OpenAI itself and any OpenAI-compatible endpoint."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from voicefallback.attempts import Attempt
from voicefallback.config import Provider
from voicefallback.providers import live
from voicefallback.providers.classify import (
    Incomplete,
    StreamError,
    body_message,
    error_event_kind,
)
from voicefallback.providers.sse import json_object, sse_events


class OpenAIAdapter(live.LiveAdapter):
    """Streaming chat completions, for every model of one `type = "openai"` provider."""

    sdk = "openai"
    proper_end = "finish_reason"

    def __init__(self, provider: Provider) -> None:
        # OpenAI's reasoning models want max_completion_tokens; many compatible servers know
        # only max_tokens and would silently ignore the other (and answer at length).
        self._limit_param = "max_completion_tokens" if _is_openai(provider) else "max_tokens"
        # What an endpoint refused, per model name: sent differently from then on.
        self._swapped_limit: set[str] = set()
        self._no_stream_options: set[str] = set()
        super().__init__(provider)

    def _build(self, key: str) -> Any:
        import openai

        http = openai.DefaultAsyncHttpxClient(event_hooks={"request": [live.stamp_send]})
        client = openai.AsyncOpenAI(
            api_key=key, base_url=self.provider.base_url, max_retries=0, http_client=http
        )
        return client

    async def _stream(self, call: Attempt, system: str | None, prompt: str, limit: int) -> None:
        messages = [{"role": "user", "content": prompt}]
        if system is not None:
            messages.insert(0, {"role": "system", "content": system})
        http = await self._open(call, messages, limit)
        call.responded()
        try:
            async for _, data in sse_events(http.aiter_bytes()):
                if data.startswith("[DONE]"):
                    continue  # read on to the end of the body, so the connection is reused
                call.event()
                chunk = json_object(data)
                if chunk.get("error"):
                    raise _stream_error(chunk["error"])
                usage = chunk.get("usage") or (chunk.get("x_groq") or {}).get("usage")
                if usage:
                    call.tokens(usage.get("prompt_tokens"), usage.get("completion_tokens"))
                for choice in chunk.get("choices") or ():
                    delta = choice.get("delta") or {}
                    # Reasoning text (reasoning_content) is not heard: not a first token.
                    call.text(delta.get("content") or delta.get("refusal"))
                    if delta.get("tool_calls"):
                        call.tool_call()
                    if choice.get("finish_reason"):
                        call.finished(live.TAIL_GRACE_S)
        finally:
            await http.aclose()
        if not call.complete:
            raise Incomplete

    async def _open(self, call: Attempt, messages: list[dict[str, str]], limit: int) -> Any:
        """Send the request; return the SDK's raw response once its headers are in.

        A parameter the endpoint refuses is swapped (the token limit) or dropped (usage
        reporting) and the request sent again, once each per model, within the deadline.
        """
        import httpx2
        import openai

        name = call.model.name
        while True:
            params: dict[str, Any] = {"model": name, "messages": messages, "stream": True}
            limit_param = self._limit_param
            if name in self._swapped_limit:
                limit_param = _OTHER_LIMIT[limit_param]
            params[limit_param] = limit
            if name not in self._no_stream_options:
                params["stream_options"] = {"include_usage": True}
            try:
                # The SDK's documented raw request (`client.post(..., cast_to=httpx.Response)`):
                # the same auth, headers and error types as `chat.completions.create`, without
                # its per-call transform of typed params (~1 ms of CPU each), which 50
                # concurrent probes on one loop would add to each other's timings.
                return await self._client.post(
                    "/chat/completions",
                    body=params,
                    cast_to=httpx2.Response,
                    options={"timeout": call.timeout_s},
                    stream=True,
                )
            except openai.BadRequestError as exc:
                refused = _refused_parameter(str(exc.message), params)
                if refused == limit_param and name not in self._swapped_limit:
                    self._swapped_limit.add(name)
                elif refused == "stream_options" and name not in self._no_stream_options:
                    self._no_stream_options.add(name)
                else:
                    raise

    def _errors(self) -> tuple[type[Exception], type[Exception], type[Exception]]:
        import openai

        return openai.APIStatusError, openai.APITimeoutError, openai.APIConnectionError

    def _status_message(self, exc: Any) -> str:
        return body_message(exc.body, str(exc.message))  # the SDK keeps the "error" object


_OTHER_LIMIT = {"max_completion_tokens": "max_tokens", "max_tokens": "max_completion_tokens"}
_OPTIONAL = ("max_completion_tokens", "max_tokens", "stream_options")


def _is_openai(provider: Provider) -> bool:
    """OpenAI itself (or Azure OpenAI), rather than another OpenAI-compatible server."""
    if not provider.base_url:
        return True
    host = urlsplit(provider.base_url).hostname or ""
    return host == "api.openai.com" or host.endswith(".openai.azure.com")


def _refused_parameter(message: str, params: Mapping[str, Any]) -> str | None:
    """Which optional parameter a 400 refuses: the first one it names ("Unsupported
    parameter: 'max_tokens' ... Use 'max_completion_tokens' instead")."""
    lowered = message.lower()
    named = [(lowered.find(p), p) for p in _OPTIONAL if p in params and p in lowered]
    return min(named)[1] if named else None


def _stream_error(error: Any) -> StreamError:
    """An `{"error": {...}}` chunk inside the stream."""
    if not isinstance(error, Mapping):
        return StreamError("server_error", str(error))
    kind = error_event_kind(str(error.get("type") or ""), str(error.get("code") or ""))
    return StreamError(kind, str(error.get("message") or error))
