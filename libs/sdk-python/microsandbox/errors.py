"""Typed errors raised by the SDK.

Every error the server sends carries a stable string code in ``error.data.code`` (see
docs/errors.md in the msb repository); the SDK turns it into one of the classes below. All of them
derive from :class:`MicrosandboxError`, which derives from :class:`RuntimeError` because the
original microsandbox SDK raised ``RuntimeError`` for every failure and code written for it
catches that.
"""

from __future__ import annotations

import builtins
from typing import Any, Dict, Mapping, Optional, Type


class MicrosandboxError(RuntimeError):
    """Base class of every error the SDK raises.

    Attributes:
        code: stable string code (``SANDBOX_NOT_FOUND``, ``AUTH_REQUIRED``, ...).
        rpc_code: the JSON-RPC numeric code, or ``None`` when the error did not come from the
            server (connection refused, malformed answer).
        message: the server's message (what went wrong and what to do next).
        data: ``error.data`` as the server sent it (may hold ``issues``, ``requestId``, ...).
        request_id: the server's request id when it sent one; quote it when reporting a fault.
    """

    code: str = "INTERNAL"

    def __init__(
        self,
        message: str,
        code: Optional[str] = None,
        rpc_code: Optional[int] = None,
        data: Optional[Mapping[str, Any]] = None,
    ) -> None:
        self.message = message
        if code is not None:
            self.code = code
        self.rpc_code = rpc_code
        self.data: Dict[str, Any] = dict(data) if data else {}
        rid = self.data.get("requestId", self.data.get("request_id"))
        self.request_id: Optional[str] = str(rid) if rid is not None else None
        super().__init__(message)

    def __str__(self) -> str:
        text = f"{self.message} [{self.code}]"
        if self.request_id:
            text += f" (request id {self.request_id})"
        return text


class ServerNotRunningError(MicrosandboxError):
    """The msb server cannot be reached (refused, unresolvable, connect timeout, dropped)."""

    code = "SERVER_NOT_RUNNING"


class AuthenticationError(MicrosandboxError):
    """Missing, invalid, expired or foreign API key (JSON-RPC -32002)."""

    code = "AUTH_REQUIRED"


class SandboxNotFoundError(MicrosandboxError):
    """The sandbox does not exist or is not running (JSON-RPC -32004)."""

    code = "SANDBOX_NOT_FOUND"


class SandboxExistsError(MicrosandboxError):
    """A sandbox of that name runs with another configuration (JSON-RPC -32005)."""

    code = "SANDBOX_EXISTS"


class SandboxBusyError(MicrosandboxError):
    """The sandbox is starting or stopping; retry after that finishes."""

    code = "SANDBOX_BUSY"


class InvalidParamsError(MicrosandboxError):
    """A parameter was missing or wrong, or a host resource was denied (JSON-RPC -32602)."""

    code = "INVALID_PARAMS"


class MethodNotFoundError(MicrosandboxError):
    """The server does not implement the method (JSON-RPC -32601)."""

    code = "METHOD_NOT_FOUND"


class TimeoutError(MicrosandboxError, builtins.TimeoutError):  # noqa: A001 - mirrors the builtin on purpose
    """An operation exceeded its deadline, on the server or in the client.

    Also an instance of the builtin ``TimeoutError``, so ``except TimeoutError`` works whichever
    of the two names the caller imported.
    """

    code = "TIMEOUT"


class ImageError(MicrosandboxError):
    """The image could not be found, pulled, unpacked or built."""

    code = "IMAGE_NOT_FOUND"


class SandboxStartError(MicrosandboxError):
    """The VM or its guest agent failed (boot failure, agent protocol error, kernel missing)."""

    code = "VM_BOOT_FAILED"


class CapacityError(MicrosandboxError):
    """The host has no room for another sandbox, or the namespace is at its quota (QUOTA_EXCEEDED)."""

    code = "CAPACITY_EXHAUSTED"


class ServiceUnavailableError(MicrosandboxError):
    """An msb service behind the server is down or restarting; retry in a few seconds."""

    code = "SERVICE_UNAVAILABLE"


class InternalError(MicrosandboxError):
    """A fault inside msb; the message carries a request id to look up in ``msb server log``."""

    code = "INTERNAL"


class ProtocolError(MicrosandboxError):
    """The server answered something that is not a JSON-RPC response (wrong URL or proxy)."""

    code = "PROTOCOL_ERROR"


class FilesUnsupportedError(MicrosandboxError):
    """The server does not implement ``sandbox.files.*`` (see docs/streaming.md)."""

    code = "FILES_UNSUPPORTED"


_BY_CODE: Dict[str, Type[MicrosandboxError]] = {
    "AUTH_REQUIRED": AuthenticationError,
    "AUTH_INVALID": AuthenticationError,
    "AUTH_FORBIDDEN": AuthenticationError,
    "SANDBOX_NOT_FOUND": SandboxNotFoundError,
    "SANDBOX_STOPPED": SandboxNotFoundError,
    "VM_DIED": SandboxNotFoundError,
    "AGENT_DISCONNECTED": SandboxNotFoundError,
    "SANDBOX_EXISTS": SandboxExistsError,
    "SANDBOX_BUSY": SandboxBusyError,
    "INVALID_PARAMS": InvalidParamsError,
    "POLICY_DENIED": InvalidParamsError,
    "IMAGE_REFERENCE_INVALID": InvalidParamsError,
    "FILE_NOT_FOUND": InvalidParamsError,
    "METHOD_NOT_FOUND": MethodNotFoundError,
    "TIMEOUT": TimeoutError,
    "VM_BOOT_TIMEOUT": TimeoutError,
    "AGENT_TIMEOUT": TimeoutError,
    "IMAGE_NOT_FOUND": ImageError,
    "IMAGE_PULL_FAILED": ImageError,
    "IMAGE_DIGEST_MISMATCH": ImageError,
    "IMAGE_LAYER_INVALID": ImageError,
    "IMAGE_BUILD_FAILED": ImageError,
    "REGISTRY_UNREACHABLE": ImageError,
    "REGISTRY_AUTH_FAILED": ImageError,
    "ROOTFS_BUILD_FAILED": ImageError,
    "KERNEL_MISSING": SandboxStartError,
    "VM_BOOT_FAILED": SandboxStartError,
    "AGENT_PROTOCOL_ERROR": SandboxStartError,
    "CAPACITY_EXHAUSTED": CapacityError,
    "QUOTA_EXCEEDED": CapacityError,
    "SERVICE_UNAVAILABLE": ServiceUnavailableError,
    "SERVER_NOT_RUNNING": ServerNotRunningError,
    "INTERNAL": InternalError,
}

# For servers that send only the numeric code (the original microsandbox server did).
_CODE_BY_RPC: Dict[int, str] = {
    -32700: "PARSE_ERROR",
    -32600: "INVALID_REQUEST",
    -32601: "METHOD_NOT_FOUND",
    -32602: "INVALID_PARAMS",
    -32603: "INTERNAL",
    -32002: "AUTH_REQUIRED",
    -32004: "SANDBOX_NOT_FOUND",
    -32005: "SANDBOX_EXISTS",
    -32006: "SANDBOX_BUSY",
    -32010: "IMAGE_NOT_FOUND",
    -32011: "IMAGE_PULL_FAILED",
    -32021: "VM_BOOT_FAILED",
    -32022: "VM_BOOT_TIMEOUT",
    -32024: "AGENT_TIMEOUT",
    -32030: "TIMEOUT",
    -32032: "CAPACITY_EXHAUSTED",
    -32034: "QUOTA_EXCEEDED",
    -32033: "SERVICE_UNAVAILABLE",
}


def error_from_rpc(error: Any) -> MicrosandboxError:
    """Build the typed exception for a JSON-RPC ``error`` object."""
    if not isinstance(error, dict):
        return ProtocolError(f"the server sent a malformed JSON-RPC error: {error!r}")
    rpc_code = error.get("code") if isinstance(error.get("code"), int) else None
    message = error.get("message")
    if not isinstance(message, str) or not message:
        message = "the server reported an error without a message"
    data = error.get("data") if isinstance(error.get("data"), dict) else {}
    code = data.get("code") if isinstance(data.get("code"), str) else None
    if code is None:
        code = _CODE_BY_RPC.get(rpc_code, "INTERNAL") if rpc_code is not None else "INTERNAL"
    cls = _BY_CODE.get(code)
    if cls is None:
        cls = _BY_CODE.get(_CODE_BY_RPC.get(rpc_code or 0, ""), MicrosandboxError)
    return cls(message, code=code, rpc_code=rpc_code, data=data)
