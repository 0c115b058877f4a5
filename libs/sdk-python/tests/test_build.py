"""The in-tree build backend makes an installable wheel with no third-party tools."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import unittest
import zipfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import build_backend  # noqa: E402
from microsandbox import __version__  # noqa: E402


class BuildBackendTest(unittest.TestCase):
    def test_wheel_holds_the_package_and_metadata(self) -> None:
        with tempfile.TemporaryDirectory() as out:
            name = build_backend.build_wheel(out)
            self.assertEqual(name, f"microsandbox-{__version__}-py3-none-any.whl")
            with zipfile.ZipFile(os.path.join(out, name)) as zf:
                names = set(zf.namelist())
                metadata = zf.read(f"microsandbox-{__version__}.dist-info/METADATA").decode()
                record = zf.read(f"microsandbox-{__version__}.dist-info/RECORD").decode()
        self.assertIn("microsandbox/__init__.py", names)
        self.assertIn("microsandbox/py.typed", names)
        self.assertFalse(any("__pycache__" in n for n in names))
        self.assertIn("Name: microsandbox", metadata)
        self.assertIn(f"Version: {__version__}", metadata)
        self.assertIn("Requires-Python: >=3.9", metadata)
        self.assertIn("microsandbox/_http.py,sha256=", record)

    def test_sdist_and_editable(self) -> None:
        with tempfile.TemporaryDirectory() as out:
            sdist = build_backend.build_sdist(out)
            self.assertTrue(os.path.exists(os.path.join(out, sdist)))
            editable = build_backend.build_editable(out)
            with zipfile.ZipFile(os.path.join(out, editable)) as zf:
                pth = [n for n in zf.namelist() if n.endswith(".pth")]
                self.assertEqual(len(pth), 1)
                self.assertEqual(zf.read(pth[0]).decode().strip(), str(build_backend.ROOT))


    @unittest.skipUnless(importlib.util.find_spec("pip"), "pip is not installed for this Python")
    def test_pip_installs_it_offline(self) -> None:
        with tempfile.TemporaryDirectory() as target:
            env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
            subprocess.run(
                [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", target,
                 str(build_backend.ROOT)],
                check=True, env=env, capture_output=True, timeout=300,
            )
            probe = subprocess.run(
                [sys.executable, "-c", "import microsandbox; print(microsandbox.__file__)"],
                check=True, cwd=target, env={**os.environ, "PYTHONPATH": target},
                capture_output=True, text=True, timeout=60,
            )
        self.assertTrue(probe.stdout.strip().startswith(target))


if __name__ == "__main__":
    unittest.main()
