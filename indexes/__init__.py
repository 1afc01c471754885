"""Storage and search of packed binary codes. Never imports torch.

`create(location, ...)` and `open_index(location, ...)` choose the backend from the
location: a folder -> FAISS; a path ending in .db or an http(s):// URI -> Milvus.
"""

from indexes.base import BinaryIndex, Hit, IndexInfo, backend_for, create, open_index

__all__ = ["BinaryIndex", "Hit", "IndexInfo", "backend_for", "create", "open_index"]
