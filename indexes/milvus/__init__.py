"""Milvus as an index backend: the URI's parts (address), the writer lease on a server (lease), the index (index)."""
