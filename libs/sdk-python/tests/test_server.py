"""Against a real msb server: set MSB_TEST_SERVER_URL (and MSB_TEST_API_KEY if auth is on).

These boot real VMs, so each test class shares one sandbox where it can.
"""

from __future__ import annotations

import asyncio
import os
import unittest
import uuid

from microsandbox import (
    FilesUnsupportedError,
    NodeSandbox,
    PythonSandbox,
    SandboxNotFoundError,
)
from microsandbox._rpc import RpcClient

SERVER_URL = os.environ.get("MSB_TEST_SERVER_URL")
API_KEY = os.environ.get("MSB_TEST_API_KEY")
SKIP_REASON = "needs a real msb server: set MSB_TEST_SERVER_URL (the e2e harness does)"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@unittest.skipUnless(SERVER_URL, SKIP_REASON)
class PythonSandboxServerTest(unittest.IsolatedAsyncioTestCase):
    async def test_state_errors_timeouts_commands_metrics(self) -> None:
        async with PythonSandbox.create(name=unique("py"), server_url=SERVER_URL, api_key=API_KEY) as sb:
            await sb.run("name = 'World'")
            exe = await sb.run("print(f'Hello {name}!')")
            self.assertEqual(await exe.output(), "Hello World!")
            self.assertEqual(exe.status, "success")
            self.assertFalse(exe.has_error())

            failed = await sb.run("1/0")
            self.assertTrue(failed.has_error())
            self.assertEqual(failed.status, "error")
            self.assertIn("ZeroDivisionError", await failed.error())

            slow = await sb.run("import time; time.sleep(30)", timeout=1)
            self.assertEqual(slow.status, "timeout")
            self.assertTrue(slow.has_error())
            after = await sb.run("print(name)")
            self.assertEqual(await after.output(), "World")

            echo = await sb.command.run("echo", ["Hello", "World"])
            self.assertEqual(await echo.output(), "Hello World")
            self.assertEqual(echo.exit_code, 0)
            self.assertTrue(echo.success)
            missing = await sb.command.run("ls", ["/nonexistent"])
            self.assertFalse(missing.success)
            self.assertNotEqual(missing.exit_code, 0)
            self.assertIn("nonexistent", await missing.error())

            self.assertTrue(await sb.metrics.is_running())
            metrics = await sb.metrics.all()
            self.assertEqual(metrics["name"], sb.name)
            memory = await sb.metrics.memory()
            self.assertTrue(memory is None or memory > 0)

            chunks = []
            streamed = await sb.run("for i in range(3): print(i)", on_stdout=chunks.append)
            self.assertEqual("".join(chunks).split(), ["0", "1", "2"])
            self.assertEqual(await streamed.output(), "0\n1\n2")

            await sb.files.write("/tmp/sdk-test/hello.txt", "héllo")
            self.assertEqual(await sb.files.read_text("/tmp/sdk-test/hello.txt"), "héllo")
            await sb.files.write("/tmp/sdk-test/data.bin", b"\x00\x01\xff")
            self.assertEqual(await sb.files.read("/tmp/sdk-test/data.bin"), b"\x00\x01\xff")
            try:
                names = [e.name for e in await sb.files.list("/tmp/sdk-test")]
                self.assertEqual(names, ["data.bin", "hello.txt"])
            except FilesUnsupportedError:
                pass  # sandbox.files.list needs a ListDir RPC in the vmm-agent (docs/streaming.md)
        self.assertFalse(await sb.metrics.is_running())

    async def test_cancelled_body_still_stops_the_sandbox(self) -> None:
        name = unique("cancel")
        entered = asyncio.Event()

        async def body() -> None:
            async with PythonSandbox.create(name=name, server_url=SERVER_URL, api_key=API_KEY):
                entered.set()
                await asyncio.sleep(3600)

        task = asyncio.ensure_future(body())
        waiter = asyncio.ensure_future(entered.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            waiter.cancel()
            task.result()  # the start failed: raise its error
        task.cancel()
        with self.assertRaises(asyncio.CancelledError):
            await task
        probe = PythonSandbox(name=name, server_url=SERVER_URL, api_key=API_KEY)
        self.assertFalse(await probe.metrics.is_running())

    async def test_unknown_sandbox_is_sandbox_not_found(self) -> None:
        client = RpcClient(SERVER_URL or "", API_KEY)
        try:
            with self.assertRaises(SandboxNotFoundError) as ctx:
                await client.call(
                    "sandbox.repl.run",
                    {"sandbox": unique("nope"), "namespace": "default", "language": "python", "code": "1"},
                    60,
                )
        finally:
            await client.close()
        self.assertEqual(ctx.exception.rpc_code, -32004)


@unittest.skipUnless(SERVER_URL, SKIP_REASON)
class NodeSandboxServerTest(unittest.IsolatedAsyncioTestCase):
    async def test_node_state_and_builtins(self) -> None:
        async with NodeSandbox.create(name=unique("node"), server_url=SERVER_URL, api_key=API_KEY) as sb:
            await sb.run("var name = 'World'")
            exe = await sb.run("console.log(`Hello ${name}!`)")
            self.assertEqual(await exe.output(), "Hello World!")
            exe = await sb.run("const os = require('os'); console.log(os.platform())")
            self.assertEqual(await exe.output(), "linux")
            failed = await sb.run("throw new Error('boom')")
            self.assertTrue(failed.has_error())
            self.assertIn("boom", await failed.error())


if __name__ == "__main__":
    unittest.main()
