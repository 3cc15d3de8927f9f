"""The layer-converter registry: one converter per Keras class, duplicates and misses refused."""

import pytest

from rnnx.errors import UnsupportedError
from rnnx.graph.to_onnx import registry

NATIVE_LAYERS = ["InputLayer", "Embedding", "Masking", "LSTM", "GRU", "SimpleRNN", "CuDNNLSTM", "CuDNNGRU",
                 "Bidirectional", "TimeDistributed", "Dense", "Activation", "Dropout", "SpatialDropout1D",
                 "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization", "Flatten", "Reshape",
                 "Permute", "RepeatVector", "Concatenate", "Add", "Subtract", "Multiply", "Average", "Maximum",
                 "Minimum", "Conv1D", "MaxPooling1D", "AveragePooling1D", "GlobalMaxPooling1D",
                 "GlobalAveragePooling1D", "BatchNormalization", "LayerNormalization"]


def test_every_listed_layer_has_a_converter():
    missing = sorted(set(NATIVE_LAYERS) - set(registry.supported()))
    assert missing == []


def test_duplicate_registration_raises():
    registry.supported()  # loads the families
    with pytest.raises(ValueError, match="Dense"):
        registry.converter("Dense")(lambda ctx, call, inputs: inputs)
    assert registry.CONVERTERS["Dense"].__module__.endswith("layers.dense")


def test_miss_names_class_layer_and_engine():
    with pytest.raises(UnsupportedError) as info:
        registry.lookup("Conv3DTranspose", "upsample_3")
    message = str(info.value)
    assert "'upsample_3'" in message and "Conv3DTranspose" in message and "--engine tf2onnx" in message
