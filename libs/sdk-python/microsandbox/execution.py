"""Results of ``sandbox.run`` (a REPL cell) and ``sandbox.command.run`` (a process)."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Tuple


def _items(result: Mapping[str, Any]) -> List[Dict[str, str]]:
    items = result.get("output")
    if not isinstance(items, list):
        return []
    return [
        {"stream": str(i.get("stream", "stdout")), "text": i["text"]}
        for i in items
        if isinstance(i, dict) and isinstance(i.get("text"), str)
    ]


def join_stream(items: List[Dict[str, str]], stream: str) -> str:
    """The text of one stream, as a user would have seen it in a terminal.

    msb sends output in chunks that keep their newlines; the original microsandbox server sent one
    item per line without the newline. Both read the same here: chunks are concatenated, line
    items are joined with newlines. Trailing newlines are dropped (``print(await
    exec.output())`` prints the text once, as the manual shows); other whitespace is kept.
    """
    texts = [i["text"] for i in items if i["stream"] == stream]
    if not texts:
        return ""
    joined = "".join(texts) if any("\n" in t for t in texts) else "\n".join(texts)
    return joined.rstrip("\r\n")


def replay_chunks(result: Any) -> List[Tuple[str, str]]:
    """The output of a finished call as the chunks a streaming server would have sent: line
    items (no newlines anywhere) get their newline back, chunks stay as they are."""
    items = _items(result) if isinstance(result, Mapping) else []
    if any("\n" in i["text"] for i in items):
        return [(i["stream"], i["text"]) for i in items]
    return [(i["stream"], i["text"] + "\n") for i in items]


class Execution:
    """The outcome of one REPL cell (``sandbox.repl.run``).

    ``status`` is ``"success"``, ``"error"`` (the code raised; the traceback is in ``error()``)
    or ``"timeout"`` (the cell was stopped; the sandbox keeps working).
    """

    def __init__(self, output_data: Optional[Mapping[str, Any]] = None) -> None:
        data: Mapping[str, Any] = output_data if isinstance(output_data, Mapping) else {}
        self._raw: Dict[str, Any] = dict(data)
        self._items = _items(data)
        self._status = str(data.get("status", "unknown"))
        self._language = str(data.get("language", "unknown"))

    async def output(self) -> str:
        """Standard output of the cell."""
        return join_stream(self._items, "stdout")

    async def error(self) -> str:
        """Standard error of the cell (tracebacks land here)."""
        return join_stream(self._items, "stderr")

    def has_error(self) -> bool:
        """True when the cell failed or timed out.

        msb's ``status`` tells the truth, so a warning printed to stderr by a successful cell is not
        an error. Servers that send no usable status fall back to the original rule: any stderr
        output counts as an error.
        """
        if self._status in ("success", "ok"):
            return False
        if self._status in ("error", "exception", "timeout"):
            return True
        return any(i["stream"] == "stderr" and i["text"] for i in self._items)

    @property
    def status(self) -> str:
        return self._status

    @property
    def language(self) -> str:
        return self._language

    @property
    def truncated(self) -> bool:
        """True when the server dropped output beyond its cap."""
        return bool(self._raw.get("truncated", False))

    @property
    def raw(self) -> Dict[str, Any]:
        """The ``result`` object as the server sent it."""
        return self._raw

    def __repr__(self) -> str:
        return f"Execution(status={self._status!r}, language={self._language!r})"


class CommandExecution:
    """The outcome of one command (``sandbox.command.run``)."""

    def __init__(self, output_data: Optional[Mapping[str, Any]] = None) -> None:
        data: Mapping[str, Any] = output_data if isinstance(output_data, Mapping) else {}
        self._raw: Dict[str, Any] = dict(data)
        self._items = _items(data)
        code = data.get("exit_code")
        self._exit_code: int = code if isinstance(code, int) else -1
        success = data.get("success")
        self._success = bool(success) if isinstance(success, bool) else self._exit_code == 0

    async def output(self) -> str:
        """Standard output of the command."""
        return join_stream(self._items, "stdout")

    async def error(self) -> str:
        """Standard error of the command."""
        return join_stream(self._items, "stderr")

    def has_error(self) -> bool:
        return not self._success

    @property
    def exit_code(self) -> int:
        """The process's exit code; -1 when it was killed or never ran."""
        return self._exit_code

    @property
    def success(self) -> bool:
        return self._success

    @property
    def command(self) -> str:
        return str(self._raw.get("command", ""))

    @property
    def args(self) -> List[str]:
        args = self._raw.get("args")
        return [str(a) for a in args] if isinstance(args, list) else []

    @property
    def timed_out(self) -> bool:
        return bool(self._raw.get("timed_out", False)) or self._raw.get("status") == "timeout"

    @property
    def truncated(self) -> bool:
        return bool(self._raw.get("truncated", False))

    @property
    def raw(self) -> Dict[str, Any]:
        return self._raw

    def __repr__(self) -> str:
        return f"CommandExecution(command={self.command!r}, exit_code={self._exit_code})"
