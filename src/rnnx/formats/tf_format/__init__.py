"""TensorFlow's own files: SavedModels, TF2 object-based and TF1 name-based checkpoints, read without TensorFlow."""
