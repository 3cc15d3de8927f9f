"""ONNX models with LSTM / GRU / RNN nodes, read and written. Entry point: `model` (reader,
per-layer writer, run_layer in onnxruntime; a whole Keras model goes to rnnx.graph). `nodes`
turns one canonical layer into ONNX nodes and initializers, for `model` and for the graph
exporter. Named onnx_format so that `import onnx` inside it plainly means the onnx package.
"""
