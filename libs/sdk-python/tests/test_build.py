"""The in-tree build backend makes an installable wheel with no third-party tools."""

from __future__ import annotations

import os
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


if __name__ == "__main__":
    unittest.main()
