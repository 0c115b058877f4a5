"""JSON-RPC 2.0 over ``POST /api/v1/rpc``, with the optional server-sent-events answer.

The streaming answer is proposed in docs/streaming.md: the client asks with
``Accept: text/event-stream``; a server that supports it answers ``output`` events and then one
``result`` event holding the ordinary JSON-RPC response; a server that does not answers plain JSON
and the caller replays the collected output (see ``call_streaming``'s return value).
"""

from __future__ import annotations

import asyncio
import codecs
import inspect
import json
import uuid
from typing import Any, Awaitable, Callable, Dict, List, Optional, Tuple, Union

from . import errors
from ._http import HttpClient, Response
from ._version import __version__

RPC_PATH = "/api/v1/rpc"

OutputCallback = Callable[[str, str], Union[None, Awaitable[None]]]


class RpcClient:
    """Calls JSON-RPC methods on one msb server with one API key."""

    def __init__(self, server_url: str, api_key: Optional[str], connect_timeout: float = 5.0) -> None:
        self._http = HttpClient(server_url, connect_timeout=connect_timeout)
        self._api_key = api_key
        self.server_url = self._http.base_url

    async def call(self, method: str, params: Dict[str, Any], timeout: Optional[float]) -> Any:
        """Call ``method`` and return its ``result``; raise the typed error otherwise.

        ``timeout`` (seconds) bounds the whole call on the client side; ``None`` means no bound.
        """
        response = await self._post(method, params, timeout, stream=False)
        return await self._json_result(response)

    async def call_streaming(
        self,
        method: str,
        params: Dict[str, Any],
        timeout: Optional[float],
        on_output: OutputCallback,
    ) -> Tuple[Any, bool]:
        """Like ``call``, delivering output events to ``on_output(stream, text)`` as they come.

        Returns ``(result, streamed)``: ``streamed`` is False when the server answered plain JSON
        (no streaming support), in which case nothing was delivered yet.
        """
        response = await self._post(method, params, timeout, stream=True)
        if response.content_type != "text/event-stream":
            return await self._json_result(response), False
        return await self._sse_result(response, on_output), True

    async def close(self) -> None:
        await self._http.close()

    async def _post(
        self, method: str, params: Dict[str, Any], timeout: Optional[float], stream: bool
    ) -> Response:
        body = json.dumps(
            {"jsonrpc": "2.0", "method": method, "params": params, "id": str(uuid.uuid4())},
            ensure_ascii=False,
        ).encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream, application/json" if stream else "application/json",
            "User-Agent": f"microsandbox-python/{__version__}",
        }
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        try:
            return await self._http.request("POST", RPC_PATH, headers, body, deadline)
        except errors.TimeoutError:
            raise errors.TimeoutError(
                f"{method}: no answer from {self.server_url} within {timeout:g}s; "
                "retry with a longer timeout",
                code="TIMEOUT",
            ) from None

    async def _json_result(self, response: Response) -> Any:
        raw = await response.read()
        return self._unwrap(response.status, raw)

    def _unwrap(self, status: int, raw: bytes) -> Any:
        try:
            message = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            message = None
        if isinstance(message, dict) and message.get("jsonrpc") == "2.0":
            if "error" in message and message["error"] is not None:
                raise errors.error_from_rpc(message["error"])
            if "result" in message:
                return message["result"]
        snippet = raw[:200].decode("utf-8", "replace")
        raise errors.ProtocolError(
            f"{self.server_url}{RPC_PATH} answered HTTP {status} with something that is not a "
            f"JSON-RPC response: {snippet!r}. Is server_url / MSB_SERVER_URL an msb server?"
        )

    async def _sse_result(self, response: Response, on_output: OutputCallback) -> Any:
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        buffer = ""
        event = "message"
        data_lines: List[str] = []
        chunks = response.chunks()
        try:
            async for chunk in chunks:
                buffer += decoder.decode(chunk)
                # Lines end in \n, \r\n or \r (SSE); keep a trailing partial line for the next chunk.
                buffer = buffer.replace("\r\n", "\n").replace("\r", "\n")
                *lines, buffer = buffer.split("\n")
                for line in lines:
                    if line == "":
                        if data_lines:
                            data = "\n".join(data_lines)
                            if event == "result":
                                return self._unwrap(200, data.encode("utf-8"))
                            if event == "output":
                                await _deliver(on_output, data)
                        event, data_lines = "message", []
                    elif line.startswith(":"):
                        continue
                    else:
                        field, _, value = line.partition(":")
                        value = value[1:] if value.startswith(" ") else value
                        if field == "event":
                            event = value
                        elif field == "data":
                            data_lines.append(value)
        finally:
            # After the result the connection is not reused: the stream is not read to its end.
            await chunks.aclose()
            response.close()
        raise errors.ServerNotRunningError(
            f"the event stream from {self.server_url} ended without a result; "
            "the server may have stopped (`msb server status`)."
        )


async def _deliver(on_output: OutputCallback, data: str) -> None:
    try:
        item = json.loads(data)
    except ValueError:
        return
    if isinstance(item, dict) and isinstance(item.get("text"), str):
        result = on_output(str(item.get("stream", "stdout")), item["text"])
        if inspect.isawaitable(result):
            await result
