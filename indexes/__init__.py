"""Storage and search of packed binary codes (installed as hashing.indexes). Never imports torch.

`create(location, ...)` and `open_index(location, ...)` choose the backend from the
location: a folder -> FAISS; a path ending in .db or an http(s):// URI -> Milvus.
"""

from hashing.indexes.backends import BACKENDS, backend_for, create, open_index
from hashing.indexes.base import BinaryIndex, Hit, IndexInfo, ModelRecord

__all__ = ["BACKENDS", "BinaryIndex", "Hit", "IndexInfo", "ModelRecord", "backend_for", "create", "open_index"]
