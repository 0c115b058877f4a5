"""A small asyncio HTTP/1.1 client with keep-alive, standard library only.

Why not ``urllib`` in a thread: a thread per call costs more than the request itself on loopback,
cannot be cancelled, and cannot hand out a streaming body (server-sent events) without more
threads. Why not aiohttp: users should not need a dependency to run code in a sandbox. The client
speaks exactly what msb needs: one request at a time per connection, ``Content-Length`` or
``chunked`` bodies, idle connections reused for a while (the per-call saving is measured in
README.md).
"""

from __future__ import annotations

import asyncio
import builtins
import socket
import ssl
import sys
from typing import AsyncIterator, Awaitable, Dict, List, Optional, Tuple, TypeVar
from urllib.parse import urlsplit

from . import errors

T = TypeVar("T")

_MAX_HEAD_BYTES = 64 * 1024
_READ_CHUNK = 64 * 1024


class _Conn:
    __slots__ = ("reader", "writer", "loop", "idle_since", "reused")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.loop = asyncio.get_running_loop()
        self.idle_since = 0.0
        self.reused = False

    def usable(self, now: float, idle_ttl: float) -> bool:
        return (
            self.loop is asyncio.get_running_loop()
            and not self.writer.is_closing()
            and not self.reader.at_eof()
            and now - self.idle_since < idle_ttl
        )

    def close(self) -> None:
        try:
            self.writer.close()
        except Exception:  # the loop may already be closed; nothing left to release
            pass


class _Expired(Exception):
    """A deadline of ``wait_until`` passed."""


async def wait_until(awaitable: Awaitable[T], deadline: float) -> T:
    """Await ``awaitable`` in the current task, cancelling it at ``deadline`` (``loop.time()``).

    Not ``asyncio.wait_for``: before Python 3.12 it runs the awaitable in another task and can
    swallow a cancellation of the caller that arrives as that task finishes, which would let a
    cancelled ``start`` return a started sandbox nobody stops.
    """
    if sys.version_info >= (3, 11):
        try:
            async with asyncio.timeout_at(deadline):
                return await awaitable
        except builtins.TimeoutError as exc:
            if isinstance(exc, errors.MicrosandboxError):
                raise
            raise _Expired() from None
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        task.cancel()

    handle = loop.call_at(deadline, expire)
    try:
        return await awaitable
    except asyncio.CancelledError:
        if expired:
            raise _Expired() from None
        raise
    finally:
        handle.cancel()


class _StaleConnection(Exception):
    """A reused idle connection died before the server sent a byte; safe to retry once."""


class Response:
    """Status, headers and a body to read once, fully (``read``) or piecewise (``chunks``)."""

    def __init__(
        self,
        client: "HttpClient",
        conn: _Conn,
        status: int,
        headers: Dict[str, str],
        deadline: Optional[float],
    ) -> None:
        self._client = client
        self._conn: Optional[_Conn] = conn
        self.status = status
        self.headers = headers
        self._deadline = deadline
        te = headers.get("transfer-encoding", "").lower()
        self._chunked = "chunked" in te
        cl = headers.get("content-length")
        self._remaining: Optional[int] = int(cl) if cl and cl.strip().isdigit() else None
        self._keep_alive = headers.get("connection", "").lower() != "close" and (
            self._chunked or self._remaining is not None
        )

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    async def read(self) -> bytes:
        parts: List[bytes] = []
        async for part in self.chunks():
            parts.append(part)
        return b"".join(parts)

    async def chunks(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if conn is None:
            return
        done = False
        try:
            if self._chunked:
                while True:
                    line = await self._client._io(conn.reader.readline(), self._deadline)
                    size_text = line.split(b";")[0].strip()
                    if not line.endswith(b"\n") or not size_text:
                        raise errors.ProtocolError("the server sent a malformed chunked body")
                    size = int(size_text, 16)
                    if size == 0:
                        # Trailers (ignored) end with an empty line.
                        while (await self._client._io(conn.reader.readline(), self._deadline)).strip():
                            pass
                        break
                    data = await self._client._io(conn.reader.readexactly(size + 2), self._deadline)
                    yield data[:-2]
            elif self._remaining is not None:
                while self._remaining > 0:
                    data = await self._client._io(
                        conn.reader.read(min(self._remaining, _READ_CHUNK)), self._deadline
                    )
                    if not data:
                        raise asyncio.IncompleteReadError(b"", self._remaining)
                    self._remaining -= len(data)
                    yield data
            else:
                while True:
                    data = await self._client._io(conn.reader.read(_READ_CHUNK), self._deadline)
                    if not data:
                        break
                    yield data
            done = True
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise self._client._lost(exc) from exc
        finally:
            self._conn = None
            if done and self._keep_alive:
                self._client._release(conn)
            else:
                conn.close()

    def close(self) -> None:
        """Drop the connection if the body was not read to the end."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class HttpClient:
    """Requests to one server (``base_url``), over a small pool of keep-alive connections.

    ``connect_timeout`` (seconds) bounds only opening a connection, so an unreachable server fails
    fast; the read deadline is per call.
    """

    def __init__(
        self,
        base_url: str,
        connect_timeout: float = 5.0,
        max_idle: int = 8,
        idle_ttl: float = 30.0,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise errors.InvalidParamsError(
                f"server_url must look like http://host:port, got {base_url!r}",
                code="INVALID_PARAMS",
            )
        self.base_url = base_url.rstrip("/")
        self._tls = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._tls else 80)
        default_port = (self._tls and self._port == 443) or (not self._tls and self._port == 80)
        host_text = f"[{self._host}]" if ":" in self._host else self._host
        self._host_header = host_text if default_port else f"{host_text}:{self._port}"
        self._prefix = parts.path.rstrip("/")
        self._connect_timeout = connect_timeout
        self._max_idle = max_idle
        self._idle_ttl = idle_ttl
        self._idle: List[_Conn] = []

    async def request(
        self,
        method: str,
        path: str,
        headers: Dict[str, str],
        body: bytes = b"",
        deadline: Optional[float] = None,
    ) -> Response:
        """Send one request and return once the status line and headers arrived.

        ``deadline`` is an absolute ``loop.time()``; ``None`` waits as long as the server takes.
        The caller must read the body (or ``close()`` the response).
        """
        head = self._head(method, path, headers, len(body))
        for attempt in (0, 1):
            conn = await self._acquire(deadline)
            try:
                return await self._exchange(conn, head + body, deadline)
            except _StaleConnection:
                conn.close()
                if attempt == 1:
                    break
            except BaseException:
                conn.close()
                raise
        raise self._lost(ConnectionResetError("connection reset"))

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _head(self, method: str, path: str, headers: Dict[str, str], length: int) -> bytes:
        lines = [f"{method} {self._prefix}{path} HTTP/1.1", f"Host: {self._host_header}"]
        for key, value in headers.items():
            lines.append(f"{key}: {value}")
        lines.append(f"Content-Length: {length}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _acquire(self, deadline: Optional[float]) -> _Conn:
        now = asyncio.get_running_loop().time()
        while self._idle:
            conn = self._idle.pop()
            if conn.usable(now, self._idle_ttl):
                conn.reused = True
                return conn
            conn.close()
        return await self._connect(deadline)

    def _release(self, conn: _Conn) -> None:
        if len(self._idle) >= self._max_idle or conn.writer.is_closing():
            conn.close()
            return
        conn.idle_since = asyncio.get_running_loop().time()
        self._idle.append(conn)

    async def _connect(self, deadline: Optional[float]) -> _Conn:
        timeout = self._connect_timeout
        if deadline is not None:
            timeout = max(0.001, min(timeout, deadline - asyncio.get_running_loop().time()))
        ssl_ctx = ssl.create_default_context() if self._tls else None
        try:
            reader, writer = await wait_until(
                asyncio.open_connection(self._host, self._port, ssl=ssl_ctx, limit=_MAX_HEAD_BYTES),
                asyncio.get_running_loop().time() + timeout,
            )
        except _Expired:
            raise errors.ServerNotRunningError(
                f"cannot reach the msb server at {self.base_url}: no connection within {timeout:g}s. "
                "Check that the server runs (`msb server status`) and that MSB_SERVER_URL is right."
            ) from None
        except ConnectionRefusedError:
            raise errors.ServerNotRunningError(
                f"the msb server is not running at {self.base_url} (connection refused). "
                "Start it with `msb server start --dev`, or set MSB_SERVER_URL to where it runs."
            ) from None
        except socket.gaierror as exc:
            raise errors.ServerNotRunningError(
                f"cannot resolve the msb server host {self._host!r} ({exc.strerror}). "
                "Check MSB_SERVER_URL / server_url."
            ) from None
        except ssl.SSLError as exc:
            raise errors.ServerNotRunningError(
                f"TLS handshake with {self.base_url} failed ({exc}). Use http:// for a plain server."
            ) from None
        except OSError as exc:
            raise errors.ServerNotRunningError(
                f"cannot reach the msb server at {self.base_url} ({exc.strerror or exc}). "
                "Start it with `msb server start --dev`, or set MSB_SERVER_URL to where it runs."
            ) from None
        sock = writer.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        return _Conn(reader, writer)

    async def _exchange(self, conn: _Conn, payload: bytes, deadline: Optional[float]) -> Response:
        try:
            conn.writer.write(payload)
            await self._io(conn.writer.drain(), deadline)
            raw = await self._io(conn.reader.readuntil(b"\r\n\r\n"), deadline)
        except asyncio.LimitOverrunError:
            raise errors.ProtocolError("the server sent response headers over 64 KiB") from None
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            partial = getattr(exc, "partial", b"")
            if conn.reused and not partial:
                raise _StaleConnection() from exc
            raise self._lost(exc) from exc
        status, headers = _parse_head(raw)
        return Response(self, conn, status, headers, deadline)

    async def _io(self, awaitable, deadline: Optional[float]):  # type: ignore[no-untyped-def]
        if deadline is None:
            return await awaitable
        try:
            return await wait_until(awaitable, deadline)
        except _Expired:
            raise errors.TimeoutError(
                f"the msb server at {self.base_url} did not answer in time", code="TIMEOUT"
            ) from None

    def _lost(self, exc: BaseException) -> errors.ServerNotRunningError:
        return errors.ServerNotRunningError(
            f"the connection to the msb server at {self.base_url} closed before the answer was "
            f"complete ({type(exc).__name__}); the server may have stopped (`msb server status`)."
        )


def _parse_head(raw: bytes) -> Tuple[int, Dict[str, str]]:
    lines = raw.decode("latin-1").split("\r\n")
    status_line = lines[0].split(" ", 2)
    if len(status_line) < 2 or not status_line[0].startswith("HTTP/") or not status_line[1].isdigit():
        raise errors.ProtocolError(f"the server did not speak HTTP/1.1: {lines[0][:80]!r}")
    headers: Dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        key, sep, value = line.partition(":")
        if sep:
            k = key.strip().lower()
            v = value.strip()
            headers[k] = f"{headers[k]}, {v}" if k in headers else v
    return int(status_line[1]), headers
