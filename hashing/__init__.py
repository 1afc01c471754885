"""hashing: learn compact binary codes for images and retrieve by Hamming distance.

Importing the package is cheap on purpose: torch and friends are imported by the
submodules that need them, so `hashing --help` and `import hashing.indexes` stay fast. The Python API: hashing/api.py.
"""

__version__ = "0.1.0"

__all__ = ["load", "open_index", "create_index"]


def __getattr__(name: str):
    # The API is imported on first use, so `import hashing` (and the CLI's --help) stays cheap.
    if name == "load":
        from hashing.api import load
        return load
    if name in ("open_index", "create_index"):
        from hashing.indexes import create, open_index
        return open_index if name == "open_index" else create
    raise AttributeError(f"module 'hashing' has no attribute {name!r}")
