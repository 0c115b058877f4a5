"""msb Python REPL driver.

Started by the host as `python3 -u /run/msb/repl/python.py` with a control channel on fd 3
(JSON lines, see docs/agent-protocol.md, "REPL drivers"). Keeps one `__main__` namespace for
the whole session, runs one cell at a time and reports how it ended. The cell's own output
goes to the ordinary stdout/stderr, so output of subprocesses is captured as well.

Ordering rule: stdout/stderr are flushed before a result line is written, so the host sees a
cell's output before its result.
"""

import ast
import builtins
import fcntl
import json
import linecache
import os
import signal
import sys
import traceback
import types

DRIVER_FILE = os.path.abspath(__file__)
CO_COROUTINE = 0x80


def _open_ctrl():
    # Move the channel away from fd 3 so user code that closes or reuses low fds cannot cut
    # it, and keep it out of subprocesses (close-on-exec).
    fd = fcntl.fcntl(3, fcntl.F_DUPFD_CLOEXEC, 100)
    os.close(3)
    return fd


class Driver:
    def __init__(self, ctrl_fd):
        self.ctrl_fd = ctrl_fd
        self.inbuf = b""
        self.running = False
        self.cell_no = 0
        self.loop = None
        main = types.ModuleType("__main__")
        main.__dict__["__builtins__"] = builtins
        sys.modules["__main__"] = main  # pickling of functions defined in cells needs it
        self.globals = main.__dict__
        sys.argv = [""]
        if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(DRIVER_FILE):
            sys.path[0] = ""  # like the interactive interpreter: import from the cwd
        signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum, frame):
        # Interrupt user code only; an interrupt between cells is ignored.
        if self.running:
            raise KeyboardInterrupt

    # ---- control channel

    def send(self, msg):
        for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            try:
                stream.flush()
            except Exception:
                pass
        data = (json.dumps(msg, ensure_ascii=False, default=str) + "\n").encode("utf-8", "replace")
        while data:
            try:
                n = os.write(self.ctrl_fd, data)
            except InterruptedError:
                continue
            data = data[n:]

    def read_message(self):
        while b"\n" not in self.inbuf:
            try:
                chunk = os.read(self.ctrl_fd, 65536)
            except InterruptedError:
                continue
            if not chunk:
                return None
            self.inbuf += chunk
        line, self.inbuf = self.inbuf.split(b"\n", 1)
        return line

    # ---- running cells

    def _run_code(self, code, hidden=False):
        # Host housekeeping cells (template warm-up, reseed after a snapshot restore) do not
        # take a cell number, so the user's first cell is still <cell-1>.
        if hidden:
            filename = "<msb>"
        else:
            self.cell_no += 1
            filename = "<cell-%d>" % self.cell_no
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        tree = compile(code, filename, "exec", ast.PyCF_ONLY_AST | flags)
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr) and not code.rstrip().endswith(";"):
            last = ast.Expression(tree.body.pop().value)
        self._eval(compile(tree, filename, "exec", flags))
        if last is not None:
            value = self._eval(compile(last, filename, "eval", flags))
            if value is not None:
                self.globals["_"] = value
                print(repr(value))

    def _eval(self, co):
        result = eval(co, self.globals)
        if co.co_flags & CO_COROUTINE:
            import asyncio  # only cells with top-level await pay for asyncio

            if self.loop is None:
                self.loop = asyncio.new_event_loop()
                asyncio.set_event_loop(self.loop)
            result = self.loop.run_until_complete(result)
        return result

    def _error(self, exc):
        # The user's view of the failure: no frames of this driver (the cell runner at the
        # top, the SIGINT handler at the bottom), also in chained exceptions.
        te = traceback.TracebackException(type(exc), exc, exc.__traceback__)
        seen = set()
        todo = [te]
        while todo:
            t = todo.pop()
            if id(t) in seen:
                continue
            seen.add(id(t))
            t.stack = traceback.StackSummary.from_list(
                [f for f in t.stack if f.filename != DRIVER_FILE])
            todo.extend(x for x in (t.__cause__, t.__context__) if x is not None)
        text = "".join(te.format())
        try:
            sys.stderr.write(text)
        except Exception:
            pass
        message = str(exc) if not isinstance(exc, SyntaxError) else (exc.msg or str(exc))
        return {"type": type(exc).__name__, "message": message, "traceback": text}

    def run_cell(self, msg_id, code, hidden=False):
        reply = {"id": msg_id, "status": "success"}
        try:
            self.running = True
            try:
                self._run_code(code, hidden)
            finally:
                self.running = False
        except SystemExit as exc:
            # exit() in a cell ends the cell, not the session
            reply = {"id": msg_id, "status": "error", "error": {
                "type": "SystemExit", "message": str(exc.code), "traceback": ""}}
        except BaseException as exc:  # KeyboardInterrupt included
            reply = {"id": msg_id, "status": "error", "error": self._error(exc)}
        return reply

    def serve(self):
        self.send({"ready": True, "language": "python", "version": sys.version.split()[0], "pid": os.getpid()})
        while True:
            reply = None
            try:
                line = self.read_message()
                if line is None:
                    return
                try:
                    msg = json.loads(line)
                    if not isinstance(msg, dict) or not isinstance(msg.get("code"), str):
                        raise ValueError("expected {\"id\":..., \"code\": \"...\"}")
                except ValueError as exc:
                    self.send({"id": None, "status": "error", "error": {
                        "type": "ProtocolError", "message": str(exc), "traceback": ""}})
                    continue
                reply = self.run_cell(msg.get("id"), msg["code"], msg.get("hidden") is True)
                self.send(reply)
            except KeyboardInterrupt:
                # The interrupt landed in driver code, just around a cell: report it once.
                self.running = False
                if reply is not None:
                    try:
                        self.send(reply)
                    except KeyboardInterrupt:
                        pass


if __name__ == "__main__":
    Driver(_open_ctrl()).serve()
