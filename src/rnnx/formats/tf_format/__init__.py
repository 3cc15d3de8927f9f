"""TensorFlow's own files, read with numpy and no TensorFlow: SavedModel directories
(savedmodel.py) and checkpoints (checkpoint.py: TF2 object-based, TF1 name-based through
tf1.py), both built on the tensor bundle reader (bundle.py) and the few protobuf messages
of protos.py. Read only: rnnx writes no TensorFlow files."""
