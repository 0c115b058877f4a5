"""``sandbox.command``: run a process in the sandbox."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional

from .execution import CommandExecution

if TYPE_CHECKING:
    from .base_sandbox import BaseSandbox, OutputHandler


class Command:
    """Runs commands in one sandbox (``sb.command``)."""

    def __init__(self, sandbox: "BaseSandbox") -> None:
        self._sandbox = sandbox

    async def run(
        self,
        command: str,
        args: Optional[List[str]] = None,
        timeout: Optional[float] = None,
        on_stdout: Optional["OutputHandler"] = None,
        on_stderr: Optional["OutputHandler"] = None,
    ) -> CommandExecution:
        """Run ``command`` with ``args`` (no shell: use ``"sh", ["-c", "..."]`` for one).

        A non-zero exit is a result (``exit_code``, ``success``), not an exception. ``timeout``
        is in seconds; the server kills the process when it expires. ``on_stdout``/``on_stderr``
        work as in ``sandbox.run``.
        """
        sb = self._sandbox
        sb._require_started()
        params: Dict[str, Any] = {
            "sandbox": sb.name,
            "namespace": sb.namespace,
            "command": command,
            "args": [str(a) for a in (args or [])],
        }
        if timeout is not None:
            params["timeout"] = timeout
        result = await sb._call_with_output("sandbox.command.run", params, timeout, on_stdout, on_stderr)
        return CommandExecution(result)
