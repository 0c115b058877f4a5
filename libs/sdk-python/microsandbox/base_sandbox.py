"""The sandbox lifecycle shared by ``PythonSandbox`` and ``NodeSandbox``."""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import uuid
from abc import ABC, abstractmethod
from typing import Any, Awaitable, Callable, Coroutine, Dict, Generator, Optional, TypeVar, Union

from . import errors
from ._rpc import RpcClient
from .command import Command
from .execution import Execution, replay_chunks
from .files import Files
from .metrics import Metrics

DEFAULT_SERVER_URL = "http://127.0.0.1:5555"

#: Seconds the client waits for ``start`` when no timeout is given: the server's own deadlines
#: (image pull up to 30 min on first use, then boot) decide, this only catches a hung server.
DEFAULT_START_WAIT = 35 * 60.0
#: Seconds added to a call's own timeout before the client gives up on the answer, so the
#: server's timeout (which returns a useful result or error) always fires first.
CLIENT_GRACE = 30.0
#: Seconds the client waits for ``sandbox.stop`` and ``sandbox.metrics.get``.
CONTROL_TIMEOUT = 60.0

OutputHandler = Callable[[str], Union[None, Awaitable[None]]]

log = logging.getLogger("microsandbox")

T = TypeVar("T")


def _timeout_for(timeout: Optional[float]) -> Optional[float]:
    return None if timeout is None else float(timeout) + CLIENT_GRACE


async def _finish(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to its end even if the caller is cancelled meanwhile, then re-raise the
    cancellation. Used for ``stop`` on the way out of ``async with``: a Ctrl-C must not leak a VM.
    """
    task = asyncio.ensure_future(coro)
    interrupted = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled():
                raise
            interrupted = True
    if interrupted:
        raise asyncio.CancelledError()
    return task.result()


class BaseSandbox(ABC):
    """A named sandbox on an msb server, driven over JSON-RPC.

    Use ``async with PythonSandbox.create(name=...) as sb`` (started on entry, stopped on exit,
    also on exceptions and cancellation), or ``sb = PythonSandbox(...)`` with ``await sb.start()``
    and ``await sb.stop()``.

    Args:
        server_url: msb server address; default ``MSB_SERVER_URL`` or ``http://127.0.0.1:5555``.
        namespace: namespace of the sandbox (default ``"default"``).
        name: sandbox name (``^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$``); generated when omitted.
        api_key: API key; default ``MSB_API_KEY``. Not needed for ``msb server start --dev``.
    """

    #: REPL language sent to ``sandbox.repl.run``.
    language: str = ""
    #: Image used when ``start``/``create`` get none.
    default_image: str = ""

    def __init__(
        self,
        server_url: Optional[str] = None,
        namespace: str = "default",
        name: Optional[str] = None,
        api_key: Optional[str] = None,
    ) -> None:
        self._server_url = (server_url or os.environ.get("MSB_SERVER_URL") or DEFAULT_SERVER_URL).rstrip("/")
        self._namespace = namespace or "default"
        self._name = name or f"sandbox-{uuid.uuid4().hex[:8]}"
        self._api_key = api_key or os.environ.get("MSB_API_KEY") or None
        self._rpc = RpcClient(self._server_url, self._api_key)
        self._is_started = False
        self._command = Command(self)
        self._metrics = Metrics(self)
        self._files = Files(self)

    @classmethod
    def create(
        cls: type,
        server_url: Optional[str] = None,
        namespace: str = "default",
        name: Optional[str] = None,
        api_key: Optional[str] = None,
        image: Optional[str] = None,
        memory: int = 512,
        cpus: float = 1,
        timeout: Optional[float] = None,
        **config: Any,
    ) -> "SandboxContext":
        """A sandbox that starts on ``async with`` entry and stops on exit.

        ``memory`` is in MiB, ``cpus`` a count, ``timeout`` the seconds the server may take to
        boot the sandbox (default: the server's; the first start of an image also pulls it). Extra keyword arguments go into the start
        ``config`` as they are (``envs=["K=V"]``, ``workdir=...``, ``volumes=[...]``,
        ``ports=[...]``). ``await PythonSandbox.create(...)`` also works and returns the started
        sandbox; stop it yourself then.
        """
        sandbox = cls(server_url=server_url, namespace=namespace, name=name, api_key=api_key)
        return SandboxContext(
            sandbox, dict(image=image, memory=memory, cpus=cpus, timeout=timeout, **config)
        )

    @property
    def name(self) -> str:
        return self._name

    @property
    def namespace(self) -> str:
        return self._namespace

    @property
    def server_url(self) -> str:
        return self._server_url

    @property
    def is_started(self) -> bool:
        return self._is_started

    @property
    def command(self) -> Command:
        """Shell commands: ``await sb.command.run("ls", ["-la"])``."""
        return self._command

    @property
    def metrics(self) -> Metrics:
        """Resource usage: ``await sb.metrics.cpu()``, ``memory()``, ``disk()``, ``all()``."""
        return self._metrics

    @property
    def files(self) -> Files:
        """Guest files: ``write``, ``read``, ``list`` (needs ``sandbox.files.*`` on the server)."""
        return self._files

    async def get_default_image(self) -> str:
        """The image ``start`` uses when given none (kept from the original SDK)."""
        return self.default_image

    async def start(
        self,
        image: Optional[str] = None,
        memory: int = 512,
        cpus: float = 1,
        timeout: Optional[float] = None,
        **config: Any,
    ) -> None:
        """Start the sandbox and return once its guest is ready. Starting a running sandbox with
        the same configuration is a no-op on the server; with another one it raises
        ``SandboxExistsError``.
        """
        if self._is_started:
            return
        cfg: Dict[str, Any] = {
            "image": image or await self.get_default_image(),
            "memory": int(memory),
            "cpus": max(1, int(round(cpus))),
        }
        if timeout is not None:
            cfg["timeout"] = timeout
        cfg.update({k: v for k, v in config.items() if v is not None})
        params = {"sandbox": self._name, "namespace": self._namespace, "config": cfg}
        wait = DEFAULT_START_WAIT if timeout is None else float(timeout) + CLIENT_GRACE
        try:
            await self._rpc.call("sandbox.start", params, wait)
        except (asyncio.CancelledError, errors.TimeoutError) as exc:
            # The server may finish the start after we gave up: stop it so no VM is left behind.
            if isinstance(exc, asyncio.CancelledError) or exc.rpc_code is None:
                await _finish(self._stop_quietly())
            raise
        self._is_started = True

    async def stop(self, remove: bool = False) -> None:
        """Stop the sandbox (its VM and everything in it). A sandbox that is already gone counts
        as stopped. ``remove=True`` deletes it too, its files included; the name is then free."""
        if not self._is_started:
            await self._rpc.close()
            return
        params: Dict[str, Any] = {"sandbox": self._name, "namespace": self._namespace}
        # Only when asked: servers without ``remove`` get the original request.
        if remove:
            params["remove"] = True
        try:
            await self._rpc.call("sandbox.stop", params, CONTROL_TIMEOUT)
        except errors.SandboxNotFoundError:
            pass
        finally:
            await self._rpc.close()
        self._is_started = False

    async def run(
        self,
        code: str,
        timeout: Optional[float] = None,
        on_stdout: Optional[OutputHandler] = None,
        on_stderr: Optional[OutputHandler] = None,
    ) -> Execution:
        """Run ``code`` in the sandbox's REPL; state persists between calls.

        ``timeout`` (seconds) stops the cell on the server (``status == "timeout"``); without it
        the server's default applies. ``on_stdout``/``on_stderr`` (plain or async functions of
        one ``str``) get output as it is produced when the server streams (docs/streaming.md),
        otherwise all of it in order when the cell ends.
        """
        self._require_started()
        params: Dict[str, Any] = {
            "sandbox": self._name,
            "namespace": self._namespace,
            "language": self.language,
            "code": code,
        }
        if timeout is not None:
            params["timeout"] = timeout
        result = await self._call_with_output("sandbox.repl.run", params, timeout, on_stdout, on_stderr)
        return Execution(result)

    async def _call_with_output(
        self,
        method: str,
        params: Dict[str, Any],
        timeout: Optional[float],
        on_stdout: Optional[OutputHandler],
        on_stderr: Optional[OutputHandler],
    ) -> Any:
        if on_stdout is None and on_stderr is None:
            return await self._rpc.call(method, params, _timeout_for(timeout))

        async def on_output(stream: str, text: str) -> None:
            handler = on_stderr if stream == "stderr" else on_stdout
            if handler is not None:
                result = handler(text)
                if inspect.isawaitable(result):
                    await result

        result, streamed = await self._rpc.call_streaming(method, params, _timeout_for(timeout), on_output)
        if not streamed:
            for stream, text in replay_chunks(result):
                await on_output(stream, text)
        return result

    def _require_started(self) -> None:
        if not self._is_started:
            raise errors.MicrosandboxError(
                f"sandbox {self._name!r} is not started: use `async with {type(self).__name__}"
                ".create(...)` or call `await sandbox.start()` first",
                code="SANDBOX_NOT_STARTED",
            )

    async def _stop_quietly(self) -> None:
        try:
            await self._rpc.call(
                "sandbox.stop", {"sandbox": self._name, "namespace": self._namespace}, CONTROL_TIMEOUT
            )
        except errors.MicrosandboxError as exc:
            if not isinstance(exc, errors.SandboxNotFoundError):
                log.warning("stopping sandbox %s/%s failed: %s", self._namespace, self._name, exc)
        finally:
            self._is_started = False
            await self._rpc.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self._name!r}, namespace={self._namespace!r})"


class SandboxContext:
    """What ``create`` returns: an async context manager, and also awaitable."""

    def __init__(self, sandbox: BaseSandbox, start_kwargs: Dict[str, Any]) -> None:
        self._sandbox = sandbox
        self._start_kwargs = start_kwargs

    async def _start(self) -> BaseSandbox:
        try:
            await self._sandbox.start(**self._start_kwargs)
        except BaseException:
            await self._sandbox._rpc.close()
            raise
        return self._sandbox

    def __await__(self) -> Generator[Any, None, BaseSandbox]:
        return self._start().__await__()

    async def __aenter__(self) -> Any:
        return await self._start()

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc is None:
            await _finish(self._sandbox.stop())
            return
        # The body failed: stop anyway, but never hide the body's exception behind a stop error.
        await _finish(self._sandbox._stop_quietly())
