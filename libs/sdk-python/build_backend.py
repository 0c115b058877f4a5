"""A PEP 517 / PEP 660 build backend for this one pure-Python package, standard library only.

Why not setuptools: ``pip install ./libs/sdk-python`` must work offline. With build isolation pip
downloads setuptools first; without it, setuptools older than 70.1 still needs the separate
``wheel`` package (absent on a stock Python, e.g. the CI machines here). This backend needs
nothing, so both ``pip install ./libs/sdk-python`` and ``pip install -e`` work with no network.
Metadata comes from ``[project]`` in pyproject.toml; the version from ``microsandbox/_version.py``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import tarfile
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parent
PACKAGE = "microsandbox"
_EPOCH = (1980, 1, 1, 0, 0, 0)


def _project() -> Dict[str, str]:
    """The string keys of ``[project]`` (tomllib is 3.11+; the file only needs this much)."""
    meta: Dict[str, str] = {}
    section = None
    for line in (ROOT / "pyproject.toml").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line.strip("[]").strip()
            continue
        m = re.match(r'^([A-Za-z0-9_-]+)\s*=\s*"([^"]*)"\s*$', line)
        if section == "project" and m:
            meta[m.group(1)] = m.group(2)
    version = re.search(
        r'__version__\s*=\s*"([^"]+)"', (ROOT / PACKAGE / "_version.py").read_text(encoding="utf-8")
    )
    meta["version"] = version.group(1) if version else "0"
    return meta


def _metadata() -> str:
    p = _project()
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {p['name']}",
        f"Version: {p['version']}",
        f"Summary: {p.get('description', '')}",
        f"Requires-Python: {p.get('requires-python', '>=3.9')}",
        f"License: {p.get('license', 'Apache-2.0')}",
        "Classifier: Programming Language :: Python :: 3",
        "Classifier: Framework :: AsyncIO",
        "Description-Content-Type: text/markdown",
        "",
        (ROOT / "README.md").read_text(encoding="utf-8"),
    ]
    return "\n".join(lines)


def _package_files() -> List[Path]:
    return sorted(
        f for f in (ROOT / PACKAGE).rglob("*") if f.is_file() and "__pycache__" not in f.parts
    )


def _dist_info() -> str:
    p = _project()
    return f"{p['name'].replace('-', '_')}-{p['version']}.dist-info"


def _write_wheel(directory: str, files: List[Tuple[str, bytes]]) -> str:
    p = _project()
    name = f"{p['name'].replace('-', '_')}-{p['version']}-py3-none-any.whl"
    info = _dist_info()
    files = files + [
        (f"{info}/METADATA", _metadata().encode("utf-8")),
        (
            f"{info}/WHEEL",
            b"Wheel-Version: 1.0\nGenerator: msb build_backend\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        ),
        (f"{info}/top_level.txt", f"{PACKAGE}\n".encode()),
    ]
    record = io.StringIO()
    for arc, data in files:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.write(f"{arc},sha256={digest},{len(data)}\n")
    record.write(f"{info}/RECORD,,\n")
    files.append((f"{info}/RECORD", record.getvalue().encode()))
    with zipfile.ZipFile(os.path.join(directory, name), "w", zipfile.ZIP_DEFLATED) as zf:
        for arc, data in files:
            zi = zipfile.ZipInfo(arc, _EPOCH)
            zi.external_attr = 0o644 << 16
            zi.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(zi, data)
    return name


def get_requires_for_build_wheel(config_settings: Optional[dict] = None) -> List[str]:
    return []


def get_requires_for_build_sdist(config_settings: Optional[dict] = None) -> List[str]:
    return []


def get_requires_for_build_editable(config_settings: Optional[dict] = None) -> List[str]:
    return []


def build_wheel(
    wheel_directory: str, config_settings: Optional[dict] = None, metadata_directory: Optional[str] = None
) -> str:
    files = [(f.relative_to(ROOT).as_posix(), f.read_bytes()) for f in _package_files()]
    return _write_wheel(wheel_directory, files)


def build_editable(
    wheel_directory: str, config_settings: Optional[dict] = None, metadata_directory: Optional[str] = None
) -> str:
    # A .pth line puts the source directory on sys.path: edits take effect without reinstalling.
    return _write_wheel(wheel_directory, [(f"__editable__.{PACKAGE}.pth", f"{ROOT}\n".encode())])


def build_sdist(sdist_directory: str, config_settings: Optional[dict] = None) -> str:
    p = _project()
    base = f"{p['name']}-{p['version']}"
    members = [ROOT / "pyproject.toml", ROOT / "build_backend.py", ROOT / "README.md"]
    members += _package_files()
    members += sorted(f for f in (ROOT / "tests").glob("*.py"))
    name = f"{base}.tar.gz"
    with tarfile.open(os.path.join(sdist_directory, name), "w:gz", format=tarfile.PAX_FORMAT) as tf:
        for f in members:
            tf.add(str(f), arcname=f"{base}/{f.relative_to(ROOT).as_posix()}")
        pkg_info = _metadata().encode("utf-8")
        ti = tarfile.TarInfo(f"{base}/PKG-INFO")
        ti.size = len(pkg_info)
        tf.addfile(ti, io.BytesIO(pkg_info))
    return name
