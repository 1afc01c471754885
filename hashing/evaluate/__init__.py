"""Layer 7, measuring codes: the class-retrieval protocol and the copy-detection protocol."""
