"""``sandbox.files``: read, write and list guest files.

Uses the ``sandbox.files.*`` JSON-RPC methods proposed in docs/streaming.md. A server without
them answers METHOD_NOT_FOUND, which becomes ``FilesUnsupportedError``.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Union

from . import errors

if TYPE_CHECKING:
    from .base_sandbox import BaseSandbox

#: Seconds the client waits for a file call.
FILES_TIMEOUT = 120.0


class FileEntry:
    """One directory entry: ``name``, ``type`` (``file``/``dir``/``symlink``/``other``),
    ``size`` (bytes), ``mode`` (permission bits), ``mtime`` (seconds since the epoch)."""

    __slots__ = ("name", "type", "size", "mode", "mtime")

    def __init__(self, data: Dict[str, Any]) -> None:
        self.name = str(data.get("name", ""))
        self.type = str(data.get("type", "other"))
        self.size = int(data.get("size", 0) or 0)
        self.mode = int(data.get("mode", 0) or 0)
        self.mtime = float(data.get("mtime", 0) or 0)

    @property
    def is_dir(self) -> bool:
        return self.type == "dir"

    def __repr__(self) -> str:
        return f"FileEntry(name={self.name!r}, type={self.type!r}, size={self.size})"


class Files:
    """Guest file access for one sandbox (``sb.files``)."""

    def __init__(self, sandbox: "BaseSandbox") -> None:
        self._sandbox = sandbox

    async def write(self, path: str, data: Union[str, bytes], mode: Optional[int] = None) -> None:
        """Write ``data`` (``str`` is UTF-8 encoded) to the absolute guest ``path``, creating
        parent directories. ``mode`` defaults to 0o644."""
        raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        params: Dict[str, Any] = {
            "path": path,
            "data": base64.b64encode(raw).decode("ascii"),
            "encoding": "base64",
            "create_parents": True,
        }
        if mode is not None:
            params["mode"] = mode
        await self._call("sandbox.files.write", params)

    async def read(self, path: str) -> bytes:
        """The contents of the guest file ``path``."""
        result = await self._call("sandbox.files.read", {"path": path, "encoding": "base64"})
        data = result.get("data", "") if isinstance(result, dict) else ""
        if isinstance(result, dict) and result.get("encoding") == "utf8":
            return str(data).encode("utf-8")
        return base64.b64decode(str(data))

    async def read_text(self, path: str, encoding: str = "utf-8") -> str:
        """The contents of the guest file ``path``, decoded."""
        return (await self.read(path)).decode(encoding)

    async def list(self, path: str = "/") -> List[FileEntry]:
        """The entries of the guest directory ``path``, sorted by name."""
        result = await self._call("sandbox.files.list", {"path": path})
        entries = result.get("entries") if isinstance(result, dict) else None
        items = [FileEntry(e) for e in entries or [] if isinstance(e, dict)]
        return sorted(items, key=lambda e: e.name)

    async def _call(self, method: str, params: Dict[str, Any]) -> Any:
        sb = self._sandbox
        sb._require_started()
        params = {"sandbox": sb.name, "namespace": sb.namespace, **params}
        try:
            return await sb._rpc.call(method, params, FILES_TIMEOUT)
        except errors.MethodNotFoundError as exc:
            raise errors.FilesUnsupportedError(
                f"the msb server at {sb.server_url} does not implement {method}; upgrade it, or "
                "use sb.command.run('sh', ['-c', ...]) to move files meanwhile",
                code="FILES_UNSUPPORTED",
                rpc_code=exc.rpc_code,
            ) from exc
