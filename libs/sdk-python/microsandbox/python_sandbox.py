"""``PythonSandbox``: a sandbox with a Python REPL (image ``microsandbox/python``)."""

from __future__ import annotations

from .base_sandbox import BaseSandbox


class PythonSandbox(BaseSandbox):
    """Runs Python code; variables, imports and functions persist between ``run`` calls."""

    language = "python"
    default_image = "microsandbox/python"
