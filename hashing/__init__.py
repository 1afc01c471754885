"""hashing: learn compact binary codes for images and retrieve by Hamming distance.

Importing the package is cheap on purpose: torch and friends are imported by the
submodules that need them, so `hashing --help` and `import hashing.indexes` stay fast. The Python API: hashing/workflows/api.py.
"""

__version__ = "0.1.0"

# The import rule (docs/design.md, tests/test_layers.py): each subpackage imports only from its own
# layer's packages above it in this tuple, never from one below; the packages that share a layer are
# siblings and never import one another. hashing.indexes (the folder indexes/) and hashing.cli (cli/)
# are installed under this name. Only model and train import torch at module level.
LAYERS = (
    ("core",),                              # errors, field checks, atomic writes, locks, the cache root, fork_map
    ("codes",),                             # the bit order, Hamming distance, metrics, baselines, grouping
    ("images",),                            # image files, folders, datasets, stamps, edits, perceptual hashes, plots
    ("indexes",),                           # storing and searching packed codes (FAISS, Milvus); no torch
    ("model",),                             # config, network, estimators, checkpoints, encoding
    ("train",),                             # recipes, train config, objectives, views, the loop, calibration
    ("evaluate", "dedup", "workflows"),     # the protocols; the duplicate finder; encode/index/query/sync/info
    ("serve",),                             # the HTTP service
    ("cli",),                               # thin click commands
)
TORCH_AT_MODULE_LEVEL = ("model", "train")

__all__ = ["load", "open_index", "create_index"]


def __getattr__(name: str):
    # The API is imported on first use, so `import hashing` (and the CLI's --help) stays cheap.
    if name == "load":
        from hashing.workflows.api import load
        return load
    if name in ("open_index", "create_index"):
        from hashing.indexes import create, open_index
        return open_index if name == "open_index" else create
    raise AttributeError(f"module 'hashing' has no attribute {name!r}")
