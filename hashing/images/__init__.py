"""Layer 3, pictures: one image file to uint8 at a model's size, image folders and their decode cache, datasets and splits, file stamps, edited copies, perceptual hashes, plots."""
