"""``NodeSandbox``: a sandbox with a Node.js REPL (image ``microsandbox/node``)."""

from __future__ import annotations

from .base_sandbox import BaseSandbox


class NodeSandbox(BaseSandbox):
    """Runs JavaScript; ``var`` bindings and top-level ``await`` work across ``run`` calls."""

    # "nodejs" is what the original SDK sent; msb accepts node, nodejs and javascript.
    language = "nodejs"
    default_image = "microsandbox/node"
