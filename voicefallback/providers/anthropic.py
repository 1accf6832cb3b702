"""Live calls through the official anthropic SDK (Messages API, streaming)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from voicefallback.attempts import Attempt
from voicefallback.providers import live
from voicefallback.providers.classify import (
    Incomplete,
    StreamError,
    body_message,
    error_event_kind,
)
from voicefallback.providers.sse import json_object, sse_events


class AnthropicAdapter(live.LiveAdapter):
    """Streaming messages, for every model of one `type = "anthropic"` provider."""

    sdk = "anthropic"
    proper_end = "message_stop"

    def _build(self, key: str) -> Any:
        import anthropic

        http = anthropic.DefaultAsyncHttpxClient(event_hooks={"request": [live.stamp_send]})
        client = anthropic.AsyncAnthropic(
            api_key=key,
            base_url=self.provider.base_url,
            max_retries=0,
            http_client=http,
            open_telemetry=False,  # a probe is measured here, not traced
        )
        return client

    async def _stream(self, call: Attempt, system: str | None, prompt: str, limit: int) -> None:
        params: dict[str, Any] = {
            "model": call.model.name,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": limit,
            "stream": True,
        }
        if system is not None:
            params["system"] = system
        import httpx2

        # The SDK's documented raw request, as in the OpenAI adapter: same auth, headers and
        # errors as `messages.create`, without its per-call transform of typed params.
        http = await self._client.post(
            "/v1/messages",
            body=params,
            cast_to=httpx2.Response,
            options={"timeout": call.timeout_s},
            stream=True,
        )
        call.responded()
        try:
            async for name, data in sse_events(http.aiter_bytes()):
                if name is None or name == "ping" or not data:
                    continue  # what the SDK's own stream skips, too
                call.event()
                event = json_object(data)
                if name == "error":
                    raise _stream_error(event)
                kind = event.get("type")
                if kind == "content_block_delta":
                    delta = event.get("delta") or {}
                    # Text and tool calls are content; thinking deltas are not a first token.
                    if delta.get("type") == "text_delta":
                        call.text(delta.get("text"))
                    elif delta.get("type") == "input_json_delta":
                        call.tool_call()
                elif kind == "content_block_start":
                    if (event.get("content_block") or {}).get("type") == "tool_use":
                        call.tool_call()
                elif kind == "message_start":
                    usage = (event.get("message") or {}).get("usage") or {}
                    call.tokens(usage.get("input_tokens"), usage.get("output_tokens"))
                elif kind == "message_delta":
                    usage = event.get("usage") or {}
                    call.tokens(None, usage.get("output_tokens"))
                elif kind == "message_stop":
                    call.finished(live.TAIL_GRACE_S)
        finally:
            await http.aclose()
        if not call.complete:
            raise Incomplete

    def _errors(self) -> tuple[type[Exception], type[Exception], type[Exception]]:
        import anthropic

        return anthropic.APIStatusError, anthropic.APITimeoutError, anthropic.APIConnectionError

    def _status_message(self, exc: Any) -> str:
        message = getattr(exc, "api_message", None)  # error.message of the response body
        if isinstance(message, str) and message:
            return message
        return body_message(exc.body, str(exc.message))


def _stream_error(event: Mapping[str, Any]) -> StreamError:
    """An `event: error` inside a 200 stream, such as overloaded_error."""
    error = event.get("error")
    if not isinstance(error, Mapping):
        return StreamError("server_error", str(event))
    kind = str(error.get("type") or "")
    return StreamError(error_event_kind(kind), f"{kind}: {error.get('message')}")
