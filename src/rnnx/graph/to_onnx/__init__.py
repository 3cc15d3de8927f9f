"""The ONNX backend of the whole-model exporter: `builder.build_model` walks the parsed Keras
model graph (rnnx.graph.config) and asks one converter per Keras layer class (`registry`,
`layers/`) to add ONNX nodes to a `context.Context`. `tf2onnx_engine` is the alternative engine
(tf_keras + tf2onnx, needs the tf extra).
"""
