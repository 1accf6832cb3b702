"""Live calls through the official openai SDK: OpenAI itself and any OpenAI-compatible endpoint."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from voicefallback.config import Provider
from voicefallback.providers import live


class OpenAIAdapter(live.LiveAdapter):
    """Streaming chat completions, for every model of one `type = "openai"` provider."""

    sdk = "openai"
    proper_end = "finish_reason"

    def __init__(self, provider: Provider) -> None:
        # Optional parameters an endpoint refused, per model name: sent without them from then on.
        self._legacy_max_tokens: set[str] = set()
        self._no_stream_options: set[str] = set()
        super().__init__(provider)

    async def _build(self, key: str) -> Any:
        import openai

        http = openai.DefaultAsyncHttpxClient(event_hooks={"request": [live.stamp_send]})
        client = openai.AsyncOpenAI(
            api_key=key, base_url=self.provider.base_url, max_retries=0, http_client=http
        )
        client.chat.completions  # noqa: B018 - import the lazily loaded resource now
        return client

    async def _stream(self, call: live.Call, system: str | None, prompt: str, limit: int) -> None:
        messages = [{"role": "user", "content": prompt}]
        if system is not None:
            messages.insert(0, {"role": "system", "content": system})
        response = await self._open(call, messages, limit)
        http = response.http_response
        call.responded(http)
        try:
            async for _, data in live.sse_events(http.aiter_bytes()):
                if data.startswith("[DONE]"):
                    continue  # read on to the end of the body, so the connection is reused
                call.event()
                chunk = live.json_object(data)
                if chunk.get("error"):
                    raise _stream_error(chunk["error"])
                usage = chunk.get("usage")
                if usage:
                    call.tokens(usage.get("prompt_tokens"), usage.get("completion_tokens"))
                for choice in chunk.get("choices") or ():
                    delta = choice.get("delta") or {}
                    # Reasoning text (reasoning_content) is not heard: not a first token.
                    call.text(delta.get("content") or delta.get("refusal"))
                    if choice.get("finish_reason"):
                        call.finished()
        finally:
            await response.close()
        if not call.complete:
            raise live.Incomplete

    async def _open(self, call: live.Call, messages: list[dict[str, str]], limit: int) -> Any:
        """Send the request; return the SDK's raw response once its headers are in.

        An optional parameter the endpoint refuses (older OpenAI-compatible servers) is
        dropped and the request sent again, once per parameter and model, within the deadline.
        """
        import openai

        name = call.model.name
        while True:
            params: dict[str, Any] = {"model": name, "messages": messages, "stream": True}
            if name in self._legacy_max_tokens:
                params["max_tokens"] = limit
            else:
                params["max_completion_tokens"] = limit  # what reasoning models accept
            if name not in self._no_stream_options:
                params["stream_options"] = {"include_usage": True}
            create = self._client.chat.completions.with_streaming_response.create
            try:
                return await create(**params, timeout=call.timeout_s).__aenter__()
            except openai.BadRequestError as exc:
                refused = str(exc.message).lower()
                if "max_completion_tokens" in refused and name not in self._legacy_max_tokens:
                    self._legacy_max_tokens.add(name)
                elif "stream_options" in refused and name not in self._no_stream_options:
                    self._no_stream_options.add(name)
                else:
                    raise

    def _errors(self) -> tuple[type[Exception], type[Exception], type[Exception]]:
        import openai

        return openai.APIStatusError, openai.APITimeoutError, openai.APIConnectionError

    def _status_message(self, exc: Any) -> str:
        body = exc.body  # the SDK keeps the "error" object of the response body
        if isinstance(body, Mapping) and isinstance(body.get("message"), str):
            return str(body["message"])
        if isinstance(body, str) and body.strip():
            return body.strip()
        return str(exc.message)


def _stream_error(error: Any) -> live.StreamError:
    """An `{"error": {...}}` chunk inside the stream."""
    if not isinstance(error, Mapping):
        return live.StreamError("server_error", str(error))
    kind = live.error_event_kind(str(error.get("type") or ""), str(error.get("code") or ""))
    return live.StreamError(kind, str(error.get("message") or error))
