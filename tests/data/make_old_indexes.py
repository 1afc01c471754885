"""Writes tests/data/old_indexes/: FAISS indexes as the code of earlier commits wrote them, for
tests/test_old_formats.py (nothing on disk may change meaning when the code moves).

    git worktree add /tmp/old1 51a1c1c^      # the last commit writing hashing-index/1
    git worktree add /tmp/old2 f6998c6^      # the last commit writing hashing-index/2
    python tests/data/make_old_indexes.py /tmp/old1 tests/data/old_indexes/faiss1
    python tests/data/make_old_indexes.py /tmp/old2 tests/data/old_indexes/faiss2

Run each in a fresh interpreter: it imports that checkout's flat `hashing` package and its top-level
`indexes/` folder under the name `hashing.indexes`, as its editable install did."""

import importlib.util
import sys
from pathlib import Path

import numpy as np

old, out = Path(sys.argv[1]), sys.argv[2]
sys.path.insert(0, str(old))
import hashing  # noqa: E402  (the old checkout's)

spec = importlib.util.spec_from_file_location("hashing.indexes", old / "indexes" / "__init__.py",
                                              submodule_search_locations=[str(old / "indexes")])
module = importlib.util.module_from_spec(spec)
sys.modules["hashing.indexes"] = module
spec.loader.exec_module(module)
assert hashing.__file__.startswith(str(old)), hashing.__file__

from hashing.indexes import IndexInfo, ModelRecord, create  # noqa: E402

rng = np.random.default_rng(7)
xb = rng.integers(0, 256, (40, 8), dtype=np.uint8)
info = IndexInfo(bits=64, model=ModelRecord("tests/data/legacy28", "59a07c23d30ef861", 64),
                 classes=["even", "odd"])
index = create(out, info)
index.add(xb, np.arange(40) % 2, [f"item{i:02d}.png" for i in range(40)])
index.save()
np.save(Path(out).parent / (Path(out).name + "_xb.npy"), xb)
print("wrote", out, "with", index.count, "items")
