"""How results read: output joining for chunked (msb) and per-line (original server) answers."""

from __future__ import annotations

import unittest

from microsandbox import CommandExecution, Execution


def items(*pairs):
    return [{"stream": s, "text": t} for s, t in pairs]


class OutputTest(unittest.IsolatedAsyncioTestCase):
    async def test_chunks_keep_their_own_newlines(self) -> None:
        exe = Execution({"status": "success", "output": items(("stdout", "Hel"), ("stdout", "lo\nWor"), ("stdout", "ld\n"))})
        self.assertEqual(await exe.output(), "Hello\nWorld")

    async def test_line_items_are_joined_with_newlines(self) -> None:
        exe = Execution({"status": "success", "output": items(("stdout", "line 1"), ("stdout", "line 2"))})
        self.assertEqual(await exe.output(), "line 1\nline 2")

    async def test_only_trailing_newlines_are_dropped(self) -> None:
        exe = Execution({"status": "success", "output": items(("stdout", "  indented  \n\n"))})
        self.assertEqual(await exe.output(), "  indented  ")

    async def test_streams_are_separate(self) -> None:
        exe = Execution({"status": "error", "output": items(("stdout", "out\n"), ("stderr", "err\n"))})
        self.assertEqual(await exe.output(), "out")
        self.assertEqual(await exe.error(), "err")

    async def test_empty_and_malformed_results(self) -> None:
        exe = Execution(None)
        self.assertEqual(await exe.output(), "")
        self.assertEqual(exe.status, "unknown")
        self.assertFalse(exe.has_error())
        odd = Execution({"output": [{"stream": "stdout"}, "junk", {"text": "x"}]})
        self.assertEqual(await odd.output(), "x")

    async def test_without_status_stderr_means_error_as_in_the_original(self) -> None:
        self.assertTrue(Execution({"output": items(("stderr", "boom"))}).has_error())
        self.assertFalse(Execution({"output": items(("stdout", "fine"))}).has_error())

    async def test_command_success_falls_back_to_exit_code(self) -> None:
        self.assertTrue(CommandExecution({"exit_code": 0}).success)
        self.assertFalse(CommandExecution({"exit_code": 3}).success)
        self.assertEqual(CommandExecution({}).exit_code, -1)
        self.assertFalse(CommandExecution({}).success)


if __name__ == "__main__":
    unittest.main()
