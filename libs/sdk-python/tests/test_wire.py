"""Wire-format tests: the SDK against a real local HTTP server serving canned JSON-RPC answers."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import unittest
from unittest import mock

import microsandbox
from microsandbox import (
    AuthenticationError,
    FilesUnsupportedError,
    MicrosandboxError,
    NodeSandbox,
    ProtocolError,
    PythonSandbox,
    SandboxExistsError,
    SandboxNotFoundError,
    ServerNotRunningError,
)
from microsandbox._rpc import RpcClient
from rpc_fake import FakeRpcServer, Recorded, ok_lifecycle


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in ("MSB_SERVER_URL", "MSB_API_KEY")}


def repl_result(*items, status="success", language="python"):
    return {
        "result": {
            "status": status,
            "language": language,
            "output": [{"stream": s, "text": t} for s, t in items],
        }
    }


class RequestShapeTest(unittest.IsolatedAsyncioTestCase):
    def setUp(self) -> None:
        patcher = mock.patch.dict(os.environ, CLEAN_ENV, clear=True)
        patcher.start()
        self.addCleanup(patcher.stop)

    async def test_start_run_stop_send_the_documented_requests(self) -> None:
        def extra(rec: Recorded):
            if rec.method == "sandbox.repl.run":
                return repl_result(("stdout", "Hello World!\n"))
            return None

        with FakeRpcServer(ok_lifecycle(extra)) as srv:
            async with PythonSandbox.create(name="my-first-sandbox", server_url=srv.url) as sb:
                exe = await sb.run("print(f'Hello {name}!')")
                self.assertEqual(await exe.output(), "Hello World!")

        self.assertEqual(srv.methods(), ["sandbox.start", "sandbox.repl.run", "sandbox.stop"])
        start, run, stop = srv.requests
        for rec in srv.requests:
            self.assertEqual(rec.path, "/api/v1/rpc")
            self.assertEqual(rec.body["jsonrpc"], "2.0")
            self.assertIsInstance(rec.body["id"], str)
            self.assertEqual(rec.headers["content-type"], "application/json")
            self.assertNotIn("authorization", rec.headers)
        self.assertEqual(
            start.params,
            {
                "sandbox": "my-first-sandbox",
                "namespace": "default",
                "config": {"image": "microsandbox/python", "memory": 512, "cpus": 1},
            },
        )
        self.assertEqual(
            run.params,
            {
                "sandbox": "my-first-sandbox",
                "namespace": "default",
                "language": "python",
                "code": "print(f'Hello {name}!')",
            },
        )
        self.assertEqual(stop.params, {"sandbox": "my-first-sandbox", "namespace": "default"})
        self.assertEqual(len({r.body["id"] for r in srv.requests}), 3)

    async def test_node_sandbox_options_api_key_and_timeout(self) -> None:
        def extra(rec: Recorded):
            if rec.method == "sandbox.repl.run":
                return repl_result(("stdout", "hi\n"), language="javascript")
            return None

        with FakeRpcServer(ok_lifecycle(extra)) as srv:
            async with NodeSandbox.create(
                name="n1",
                server_url=srv.url + "/",
                namespace="team-a",
                api_key="k-123",
                image="microsandbox/node:20",
                memory=1024,
                cpus=2,
                timeout=90,
                envs=["DEBUG=true"],
            ) as sb:
                exe = await sb.run("console.log('hi')", timeout=5)
                self.assertEqual(exe.language, "javascript")

        start, run, _ = srv.requests
        self.assertEqual(
            start.params["config"],
            {"image": "microsandbox/node:20", "memory": 1024, "cpus": 2, "timeout": 90, "envs": ["DEBUG=true"]},
        )
        self.assertEqual(start.params["namespace"], "team-a")
        self.assertEqual(run.params["language"], "nodejs")
        self.assertEqual(run.params["timeout"], 5)
        for rec in srv.requests:
            self.assertEqual(rec.headers["authorization"], "Bearer k-123")

    async def test_environment_supplies_server_url_and_api_key(self) -> None:
        with FakeRpcServer(ok_lifecycle()) as srv:
            with mock.patch.dict(os.environ, {"MSB_SERVER_URL": srv.url, "MSB_API_KEY": "env-key"}):
                async with PythonSandbox.create() as sb:
                    self.assertRegex(sb.name, r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
        self.assertEqual(srv.requests[0].headers["authorization"], "Bearer env-key")
        self.assertEqual(srv.requests[0].params["sandbox"], srv.requests[1].params["sandbox"])

    async def test_awaiting_create_returns_a_started_sandbox(self) -> None:
        with FakeRpcServer(ok_lifecycle()) as srv:
            sb = await PythonSandbox.create(name="awaited", server_url=srv.url)
            self.assertTrue(sb.is_started)
            await sb.stop()
            self.assertFalse(sb.is_started)
        self.assertEqual(srv.methods(), ["sandbox.start", "sandbox.stop"])

    async def test_stop_with_remove_asks_the_server_to_delete_the_sandbox(self) -> None:
        with FakeRpcServer(ok_lifecycle()) as srv:
            sb = await PythonSandbox.create(name="tmp", server_url=srv.url)
            await sb.stop(remove=True)
        self.assertEqual(
            srv.requests[-1].params, {"sandbox": "tmp", "namespace": "default", "remove": True}
        )

    async def test_calls_reuse_one_keep_alive_connection(self) -> None:
        def extra(rec: Recorded):
            if rec.method == "sandbox.repl.run":
                return repl_result()
            return None

        with FakeRpcServer(ok_lifecycle(extra)) as srv:
            async with PythonSandbox.create(name="ka", server_url=srv.url) as sb:
                for _ in range(5):
                    await sb.run("pass")
        self.assertEqual(len(srv.requests), 7)
        self.assertEqual(srv.connections, 1)

    async def test_a_connection_the_server_closed_is_replaced(self) -> None:
        def extra(rec: Recorded):
            if rec.method == "sandbox.repl.run":
                return {**repl_result(("stdout", "x")), "close": True}
            return None

        with FakeRpcServer(ok_lifecycle(extra)) as srv:
            async with PythonSandbox.create(name="closing", server_url=srv.url) as sb:
                for _ in range(3):
                    self.assertEqual(await (await sb.run("print('x')")).output(), "x")
        self.assertEqual(srv.methods().count("sandbox.repl.run"), 3)


class ResultsTest(unittest.IsolatedAsyncioTestCase):
    def setUp(self) -> None:
        patcher = mock.patch.dict(os.environ, CLEAN_ENV, clear=True)
        patcher.start()
        self.addCleanup(patcher.stop)

    async def test_execution_status_error_and_output(self) -> None:
        answers = iter(
            [
                repl_result(("stdout", "a\n"), ("stderr", "Traceback...\nZeroDivisionError: x\n"), status="error"),
                repl_result(("stderr", "a warning\n"), status="success"),
                repl_result(status="timeout"),
            ]
        )

        def extra(rec: Recorded):
            return next(answers) if rec.method == "sandbox.repl.run" else None

        with FakeRpcServer(ok_lifecycle(extra)) as srv:
            async with PythonSandbox.create(name="r", server_url=srv.url) as sb:
                failed = await sb.run("1/0")
                warned = await sb.run("warn()")
                slow = await sb.run("sleep()", timeout=1)
        self.assertTrue(failed.has_error())
        self.assertEqual(failed.status, "error")
        self.assertEqual(await failed.output(), "a")
        self.assertEqual(await failed.error(), "Traceback...\nZeroDivisionError: x")
        self.assertFalse(warned.has_error())
        self.assertEqual(await warned.error(), "a warning")
        self.assertTrue(slow.has_error())
        self.assertEqual(slow.status, "timeout")

    async def test_command_run(self) -> None:
        def extra(rec: Recorded):
            if rec.method == "sandbox.command.run":
                return {
                    "result": {
                        "command": "ls",
                        "args": ["/nonexistent"],
                        "exit_code": 2,
                        "success": False,
                        "output": [{"stream": "stderr", "text": "ls: cannot access '/nonexistent'\n"}],
                    }
                }
            return None

        with FakeRpcServer(ok_lifecycle(extra)) as srv:
            async with PythonSandbox.create(name="c", server_url=srv.url) as sb:
                res = await sb.command.run("ls", ["/nonexistent"], timeout=10)
        self.assertEqual(srv.requests[1].params, {
            "sandbox": "c", "namespace": "default", "command": "ls", "args": ["/nonexistent"], "timeout": 10,
        })
        self.assertEqual(res.exit_code, 2)
        self.assertFalse(res.success)
        self.assertEqual(await res.output(), "")
        self.assertEqual(await res.error(), "ls: cannot access '/nonexistent'")

    async def test_command_without_args_sends_an_empty_list(self) -> None:
        def extra(rec: Recorded):
            if rec.method == "sandbox.command.run":
                return {"result": {"exit_code": 0, "success": True, "output": [{"stream": "stdout", "text": "ok\n"}]}}
            return None

        with FakeRpcServer(ok_lifecycle(extra)) as srv:
            async with PythonSandbox.create(name="c2", server_url=srv.url) as sb:
                res = await sb.command.run("true")
        self.assertEqual(srv.requests[1].params["args"], [])
        self.assertNotIn("timeout", srv.requests[1].params)
        self.assertTrue(res.success)
        self.assertEqual(await res.output(), "ok")

    async def test_metrics(self) -> None:
        entry = {"namespace": "default", "name": "m", "running": True, "cpu_usage": 12.5,
                 "memory_usage": 80, "disk_usage": 4096}

        def extra(rec: Recorded):
            if rec.method == "sandbox.metrics.get":
                return {"result": {"sandboxes": [dict(entry, name="other"), entry]}}
            return None

        with FakeRpcServer(ok_lifecycle(extra)) as srv:
            async with PythonSandbox.create(name="m", server_url=srv.url) as sb:
                self.assertEqual(await sb.metrics.all(), entry)
                self.assertEqual(await sb.metrics.cpu(), 12.5)
                self.assertEqual(await sb.metrics.memory(), 80)
                self.assertEqual(await sb.metrics.disk(), 4096)
                self.assertTrue(await sb.metrics.is_running())
        self.assertEqual(srv.requests[1].params, {"namespace": "default", "sandbox": "m"})

    async def test_is_running_is_false_for_an_unknown_sandbox(self) -> None:
        def extra(rec: Recorded):
            if rec.method == "sandbox.metrics.get":
                return {"result": {"sandboxes": []}}
            return None

        with FakeRpcServer(ok_lifecycle(extra)) as srv:
            async with PythonSandbox.create(name="gone", server_url=srv.url) as sb:
                self.assertFalse(await sb.metrics.is_running())
                with self.assertRaises(SandboxNotFoundError):
                    await sb.metrics.cpu()

    async def test_run_before_start_says_how_to_start(self) -> None:
        sb = PythonSandbox(name="idle", server_url="http://127.0.0.1:9")
        with self.assertRaises(MicrosandboxError) as ctx:
            await sb.run("pass")
        self.assertEqual(ctx.exception.code, "SANDBOX_NOT_STARTED")
        self.assertIn("start()", str(ctx.exception))


class ErrorMappingTest(unittest.IsolatedAsyncioTestCase):
    def setUp(self) -> None:
        patcher = mock.patch.dict(os.environ, CLEAN_ENV, clear=True)
        patcher.start()
        self.addCleanup(patcher.stop)

    async def call_with(self, answer):
        with FakeRpcServer(lambda rec: answer) as srv:
            client = RpcClient(srv.url, None)
            try:
                return await client.call("sandbox.stop", {"sandbox": "x", "namespace": "default"}, 10)
            finally:
                await client.close()

    async def test_string_code_in_error_data_picks_the_class(self) -> None:
        cases = [
            ("SANDBOX_NOT_FOUND", -32004, 404, SandboxNotFoundError),
            ("SANDBOX_STOPPED", -32004, 409, SandboxNotFoundError),
            ("AUTH_INVALID", -32002, 401, AuthenticationError),
            ("AUTH_FORBIDDEN", -32002, 403, AuthenticationError),
            ("SANDBOX_EXISTS", -32005, 409, SandboxExistsError),
            ("POLICY_DENIED", -32602, 403, microsandbox.InvalidParamsError),
            ("VM_BOOT_TIMEOUT", -32022, 504, microsandbox.TimeoutError),
            ("IMAGE_NOT_FOUND", -32010, 404, microsandbox.ImageError),
            ("INTERNAL", -32603, 500, microsandbox.InternalError),
        ]
        for code, rpc_code, status, cls in cases:
            with self.subTest(code=code):
                message = f"{code} happened; here is what to do next"
                with self.assertRaises(cls) as ctx:
                    await self.call_with({
                        "status": status,
                        "error": {"code": rpc_code, "message": message, "data": {"code": code, "requestId": "r-1"}},
                    })
                err = ctx.exception
                self.assertEqual(err.code, code)
                self.assertEqual(err.rpc_code, rpc_code)
                self.assertEqual(err.message, message)
                self.assertEqual(err.request_id, "r-1")
                self.assertIn(message, str(err))
                self.assertIsInstance(err, RuntimeError)

    async def test_numeric_code_alone_still_maps(self) -> None:
        with self.assertRaises(SandboxExistsError) as ctx:
            await self.call_with({"error": {"code": -32005, "message": "exists", "data": None}})
        self.assertEqual(ctx.exception.code, "SANDBOX_EXISTS")

    async def test_unknown_code_is_the_base_class(self) -> None:
        with self.assertRaises(MicrosandboxError) as ctx:
            await self.call_with({"error": {"code": -32099, "message": "new", "data": {"code": "SOMETHING_NEW"}}})
        self.assertIs(type(ctx.exception), MicrosandboxError)
        self.assertEqual(ctx.exception.code, "SOMETHING_NEW")

    async def test_timeout_error_is_also_the_builtin(self) -> None:
        with self.assertRaises(TimeoutError):
            await self.call_with({"error": {"code": -32030, "message": "slow", "data": {"code": "TIMEOUT"}}})

    async def test_a_body_that_is_not_json_rpc_is_a_protocol_error(self) -> None:
        with self.assertRaises(ProtocolError) as ctx:
            await self.call_with({"status": 404, "raw": b"Cannot POST /api/v1/rpc"})
        self.assertIn("HTTP 404", str(ctx.exception))
        self.assertIn("MSB_SERVER_URL", str(ctx.exception))

    async def test_client_deadline_raises_timeout(self) -> None:
        with FakeRpcServer(lambda rec: {"result": "late", "delay": 2}) as srv:
            client = RpcClient(srv.url, None)
            try:
                with self.assertRaises(microsandbox.TimeoutError) as ctx:
                    await client.call("sandbox.repl.run", {}, 0.2)
            finally:
                await client.close()
        self.assertEqual(ctx.exception.code, "TIMEOUT")
        self.assertIsNone(ctx.exception.rpc_code)

    async def test_connection_refused_is_server_not_running(self) -> None:
        url = f"http://127.0.0.1:{free_port()}"
        with self.assertRaises(ServerNotRunningError) as ctx:
            async with PythonSandbox.create(name="x", server_url=url):
                self.fail("the body must not run")
        err = ctx.exception
        self.assertEqual(err.code, "SERVER_NOT_RUNNING")
        self.assertIsNone(err.rpc_code)
        self.assertIn("not running", str(err))
        self.assertIn("msb server start --dev", str(err))
        self.assertIn(url, str(err))

    async def test_start_failure_is_raised_and_the_body_does_not_run(self) -> None:
        def handler(rec: Recorded):
            return {"status": 409, "error": {"code": -32005, "message": "exists with another config",
                                             "data": {"code": "SANDBOX_EXISTS"}}}

        with FakeRpcServer(handler) as srv:
            with self.assertRaises(SandboxExistsError):
                async with PythonSandbox.create(name="taken", server_url=srv.url):
                    self.fail("the body must not run")
        # Someone else's sandbox: never stopped on their behalf.
        self.assertEqual(srv.methods(), ["sandbox.start"])


class LifecycleTest(unittest.IsolatedAsyncioTestCase):
    def setUp(self) -> None:
        patcher = mock.patch.dict(os.environ, CLEAN_ENV, clear=True)
        patcher.start()
        self.addCleanup(patcher.stop)

    async def test_stops_when_the_body_raises(self) -> None:
        with FakeRpcServer(ok_lifecycle()) as srv:
            with self.assertRaises(ZeroDivisionError):
                async with PythonSandbox.create(name="boom", server_url=srv.url):
                    1 / 0
        self.assertEqual(srv.methods(), ["sandbox.start", "sandbox.stop"])

    async def test_body_error_wins_over_a_failing_stop(self) -> None:
        def extra(rec: Recorded):
            if rec.method == "sandbox.stop":
                return {"status": 500, "error": {"code": -32603, "message": "x", "data": {"code": "INTERNAL"}}}
            return None

        with FakeRpcServer(ok_lifecycle(extra)) as srv:
            with self.assertLogs("microsandbox", level="WARNING"):
                with self.assertRaises(KeyError):
                    async with PythonSandbox.create(name="boom", server_url=srv.url):
                        raise KeyError("body")

    async def test_stops_when_the_task_is_cancelled(self) -> None:
        entered = asyncio.Event()

        async def user_code(url: str) -> None:
            async with PythonSandbox.create(name="cancelled", server_url=url):
                entered.set()
                await asyncio.sleep(3600)

        with FakeRpcServer(ok_lifecycle()) as srv:
            task = asyncio.ensure_future(user_code(srv.url))
            await entered.wait()
            task.cancel()
            with self.assertRaises(asyncio.CancelledError):
                await task
        self.assertEqual(srv.methods(), ["sandbox.start", "sandbox.stop"])

    async def test_cancel_during_start_stops_what_the_server_may_have_started(self) -> None:
        def handler(rec: Recorded):
            if rec.method == "sandbox.start":
                return {"result": "started", "delay": 1}
            return {"result": "stopped"}

        with FakeRpcServer(handler) as srv:
            task = asyncio.ensure_future(PythonSandbox.create(name="slow", server_url=srv.url).__aenter__())
            while not srv.requests:
                await asyncio.sleep(0.01)
            task.cancel()
            with self.assertRaises(asyncio.CancelledError):
                await task
        self.assertEqual(srv.methods(), ["sandbox.start", "sandbox.stop"])

    async def test_stop_of_a_sandbox_that_is_already_gone_succeeds(self) -> None:
        def extra(rec: Recorded):
            if rec.method == "sandbox.stop":
                return {"status": 404, "error": {"code": -32004, "message": "gone", "data": {"code": "SANDBOX_NOT_FOUND"}}}
            return None

        with FakeRpcServer(ok_lifecycle(extra)) as srv:
            async with PythonSandbox.create(name="gone", server_url=srv.url) as sb:
                pass
        self.assertFalse(sb.is_started)


class StreamingTest(unittest.IsolatedAsyncioTestCase):
    def setUp(self) -> None:
        patcher = mock.patch.dict(os.environ, CLEAN_ENV, clear=True)
        patcher.start()
        self.addCleanup(patcher.stop)

    async def test_server_sent_events_reach_the_callbacks_in_order(self) -> None:
        final = {"status": "success", "language": "python",
                 "output": [{"stream": "stdout", "text": "1\n2\n"}, {"stream": "stderr", "text": "w\n"}]}

        def extra(rec: Recorded):
            if rec.method == "sandbox.repl.run":
                self.assertIn("text/event-stream", rec.headers["accept"])
                return {"sse": [
                    ("output", {"stream": "stdout", "text": "1\n"}),
                    (None, ": keep-alive comment"),
                    ("output", {"stream": "stderr", "text": "w\n"}),
                    ("output", {"stream": "stdout", "text": "2\n"}),
                    ("result", {"jsonrpc": "2.0", "id": rec.body["id"], "result": final}),
                ]}
            return None

        seen = []

        async def on_err(text: str) -> None:
            seen.append(("err", text))

        with FakeRpcServer(ok_lifecycle(extra)) as srv:
            async with PythonSandbox.create(name="s", server_url=srv.url) as sb:
                exe = await sb.run("...", on_stdout=lambda t: seen.append(("out", t)), on_stderr=on_err)
        self.assertEqual(seen, [("out", "1\n"), ("err", "w\n"), ("out", "2\n")])
        self.assertEqual(await exe.output(), "1\n2")

    async def test_an_error_result_in_the_stream_raises(self) -> None:
        def extra(rec: Recorded):
            if rec.method == "sandbox.repl.run":
                return {"sse": [("result", {"jsonrpc": "2.0", "id": rec.body["id"], "error": {
                    "code": -32004, "message": "vm died", "data": {"code": "VM_DIED"}}})]}
            return None

        with FakeRpcServer(ok_lifecycle(extra)) as srv:
            async with PythonSandbox.create(name="s", server_url=srv.url) as sb:
                with self.assertRaises(SandboxNotFoundError) as ctx:
                    await sb.run("...", on_stdout=print)
        self.assertEqual(ctx.exception.code, "VM_DIED")

    async def test_fallback_gives_line_items_their_newline_back(self) -> None:
        def extra(rec: Recorded):
            if rec.method == "sandbox.repl.run":
                return repl_result(("stdout", "0"), ("stdout", "1"), ("stderr", "w"))
            return None

        seen = []
        with FakeRpcServer(ok_lifecycle(extra)) as srv:
            async with PythonSandbox.create(name="s", server_url=srv.url) as sb:
                exe = await sb.run("...", on_stdout=lambda t: seen.append(("out", t)),
                                   on_stderr=lambda t: seen.append(("err", t)))
        self.assertEqual(seen, [("out", "0\n"), ("out", "1\n"), ("err", "w\n")])
        self.assertEqual(await exe.output(), "0\n1")

    async def test_plain_json_answer_falls_back_to_delivering_at_the_end(self) -> None:
        def extra(rec: Recorded):
            if rec.method == "sandbox.command.run":
                return {"result": {"exit_code": 0, "success": True, "output": [
                    {"stream": "stdout", "text": "a\n"}, {"stream": "stderr", "text": "b\n"},
                    {"stream": "stdout", "text": "c\n"}]}}
            return None

        seen = []
        with FakeRpcServer(ok_lifecycle(extra)) as srv:
            async with PythonSandbox.create(name="s", server_url=srv.url) as sb:
                res = await sb.command.run("sh", ["-c", "..."], on_stdout=lambda t: seen.append(("out", t)),
                                           on_stderr=lambda t: seen.append(("err", t)))
        self.assertEqual(seen, [("out", "a\n"), ("err", "b\n"), ("out", "c\n")])
        self.assertEqual(await res.output(), "a\nc")


class FilesTest(unittest.IsolatedAsyncioTestCase):
    def setUp(self) -> None:
        patcher = mock.patch.dict(os.environ, CLEAN_ENV, clear=True)
        patcher.start()
        self.addCleanup(patcher.stop)

    async def test_write_read_list(self) -> None:
        store = {}

        def extra(rec: Recorded):
            p = rec.params
            if rec.method == "sandbox.files.write":
                store[p["path"]] = base64.b64decode(p["data"])
                return {"result": {"path": p["path"], "size": len(store[p["path"]])}}
            if rec.method == "sandbox.files.read":
                return {"result": {"path": p["path"], "data": base64.b64encode(store[p["path"]]).decode(),
                                   "encoding": "base64", "size": len(store[p["path"]]), "truncated": False}}
            if rec.method == "sandbox.files.list":
                return {"result": {"path": p["path"], "entries": [
                    {"name": "b.bin", "type": "file", "size": 3, "mode": 420, "mtime": 1.5},
                    {"name": "a", "type": "dir", "size": 0, "mode": 493, "mtime": 1.0}]}}
            return None

        with FakeRpcServer(ok_lifecycle(extra)) as srv:
            async with PythonSandbox.create(name="f", server_url=srv.url) as sb:
                await sb.files.write("/tmp/b.bin", b"\x00\xffz", mode=0o600)
                await sb.files.write("/tmp/t.txt", "héllo")
                self.assertEqual(await sb.files.read("/tmp/b.bin"), b"\x00\xffz")
                self.assertEqual(await sb.files.read_text("/tmp/t.txt"), "héllo")
                entries = await sb.files.list("/tmp")
        write = srv.requests[1]
        self.assertEqual(write.params, {"sandbox": "f", "namespace": "default", "path": "/tmp/b.bin",
                                        "data": "AP96", "encoding": "base64", "create_parents": True,
                                        "mode": 0o600})
        self.assertEqual([(e.name, e.is_dir, e.size) for e in entries], [("a", True, 0), ("b.bin", False, 3)])

    async def test_a_server_without_files_methods_gives_a_clear_error(self) -> None:
        with FakeRpcServer(ok_lifecycle()) as srv:
            async with PythonSandbox.create(name="f", server_url=srv.url) as sb:
                with self.assertRaises(FilesUnsupportedError) as ctx:
                    await sb.files.read("/etc/hostname")
        self.assertEqual(ctx.exception.code, "FILES_UNSUPPORTED")
        self.assertIn("sandbox.files.read", str(ctx.exception))


if __name__ == "__main__":
    unittest.main()
