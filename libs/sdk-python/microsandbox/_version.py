"""The SDK's version, in one place (pyproject.toml and the User-Agent read it)."""

__version__ = "0.1.0"
