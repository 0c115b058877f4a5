"""``sandbox.metrics``: resource usage of one sandbox."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Optional

from . import errors

if TYPE_CHECKING:
    from .base_sandbox import BaseSandbox


class Metrics:
    """Reads ``sandbox.metrics.get`` for one sandbox (``sb.metrics``). Each call asks the server
    anew; use ``all()`` to get every value from one snapshot."""

    def __init__(self, sandbox: "BaseSandbox") -> None:
        self._sandbox = sandbox

    async def all(self) -> Dict[str, Any]:
        """``{namespace, name, running, cpu_usage (%), memory_usage (MiB), disk_usage (bytes)}``.

        Raises ``SandboxNotFoundError`` when the server does not know the sandbox.
        """
        from .base_sandbox import CONTROL_TIMEOUT

        sb = self._sandbox
        result = await sb._rpc.call(
            "sandbox.metrics.get", {"namespace": sb.namespace, "sandbox": sb.name}, CONTROL_TIMEOUT
        )
        sandboxes = result.get("sandboxes") if isinstance(result, dict) else None
        for entry in sandboxes or []:
            if isinstance(entry, dict) and entry.get("name") == sb.name and entry.get("namespace", sb.namespace) == sb.namespace:
                return entry
        raise errors.SandboxNotFoundError(
            f"sandbox {sb.name!r} not found in namespace {sb.namespace!r}; start it first",
            code="SANDBOX_NOT_FOUND",
        )

    async def cpu(self) -> Optional[float]:
        """CPU usage in percent of one core, or ``None`` when unknown."""
        value = (await self.all()).get("cpu_usage")
        return float(value) if isinstance(value, (int, float)) else None

    async def memory(self) -> Optional[int]:
        """Memory in use in MiB, or ``None`` when unknown."""
        value = (await self.all()).get("memory_usage")
        return int(value) if isinstance(value, (int, float)) else None

    async def disk(self) -> Optional[int]:
        """Disk in use in bytes, or ``None`` when unknown."""
        value = (await self.all()).get("disk_usage")
        return int(value) if isinstance(value, (int, float)) else None

    async def is_running(self) -> bool:
        """True while the sandbox runs; False when it is stopped or unknown to the server."""
        try:
            return bool((await self.all()).get("running", False))
        except errors.SandboxNotFoundError:
            return False
