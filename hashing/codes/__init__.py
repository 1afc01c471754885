"""Layer 2, binary codes as numbers: the bit order (pack/unpack), Hamming distances, ranking metrics, the classic baselines (LSH, PCAH, ITQ), groups of codes within a threshold. NumPy only."""
