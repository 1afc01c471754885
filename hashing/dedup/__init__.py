"""Layer 7, the duplicate finder: candidate pairs from codes, the pixel check, moving files with an undo log, the HTML report."""
