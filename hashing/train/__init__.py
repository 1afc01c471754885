"""Layer 6, training: recipes resolved into configs, the batch and lr plan, the loss terms, the random views, neighbour positives, torchrun, the loop, a copies model's calibration."""
