"""Python SDK for msb: run untrusted code in microVM sandboxes.

    import asyncio
    from microsandbox import PythonSandbox

    async def main():
        async with PythonSandbox.create(name="my-first-sandbox") as sb:
            exec = await sb.run("print('Hello')")
            print(await exec.output())

    asyncio.run(main())

Standard library only. Server from ``MSB_SERVER_URL`` (default http://127.0.0.1:5555), key from
``MSB_API_KEY``.
"""

from ._version import __version__
from .base_sandbox import BaseSandbox, SandboxContext
from .command import Command
from .errors import (
    AuthenticationError,
    CapacityError,
    FilesUnsupportedError,
    ImageError,
    InternalError,
    InvalidParamsError,
    MethodNotFoundError,
    MicrosandboxError,
    ProtocolError,
    SandboxBusyError,
    SandboxExistsError,
    SandboxNotFoundError,
    SandboxStartError,
    ServerNotRunningError,
    ServiceUnavailableError,
    TimeoutError,
)
from .execution import CommandExecution, Execution
from .files import FileEntry, Files
from .metrics import Metrics
from .node_sandbox import NodeSandbox
from .python_sandbox import PythonSandbox

__all__ = [
    "__version__",
    "AuthenticationError",
    "BaseSandbox",
    "CapacityError",
    "Command",
    "CommandExecution",
    "Execution",
    "FileEntry",
    "Files",
    "FilesUnsupportedError",
    "ImageError",
    "InternalError",
    "InvalidParamsError",
    "MethodNotFoundError",
    "Metrics",
    "MicrosandboxError",
    "NodeSandbox",
    "ProtocolError",
    "PythonSandbox",
    "SandboxBusyError",
    "SandboxContext",
    "SandboxExistsError",
    "SandboxNotFoundError",
    "SandboxStartError",
    "ServerNotRunningError",
    "ServiceUnavailableError",
    "TimeoutError",
]
