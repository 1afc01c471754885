"""Layer 1, the foundation: user errors, field checks, atomic writes and the manifest commit, OS locks, the cache root, forked workers. Imports nothing else of the package."""
