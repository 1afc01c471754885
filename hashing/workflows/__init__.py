"""Layer 7, what the commands do with a model and an index: encode, build an index, query, sync an index with its folder, info and remove, the Python API."""
