"""rnnx: move LSTM, GRU and simple RNN weights between frameworks without losing a digit.

    bundle = rnnx.load("cudnn_model.h5")          # any supported file -> canonical Bundle
    rnnx.save(bundle, "model.onnx")               # canonical Bundle -> any supported target
    rnnx.convert("cudnn_model.h5", "model.h5")    # both at once
    rnnx.inspect("model.h5")                      # what is in a file, as a dict
    rnnx.verify("cudnn_model.h5", "model.onnx")   # prove the target computes the same numbers
"""

__version__ = "0.1.0"

from .api import ConvertResult, convert, inspect, load, save, verify  # noqa: E402
from .canonical import Activation, Bundle, Direction, OpaqueLayer, RecurrentLayer  # noqa: E402
from .errors import DeadlineError, FormatError, RnnxError, UnsupportedError, UsageError, VerificationError  # noqa: E402

__all__ = [
    # functions
    "load", "save", "convert", "inspect", "verify", "ConvertResult",
    # canonical form
    "Bundle", "RecurrentLayer", "OpaqueLayer", "Direction", "Activation",
    # errors
    "RnnxError", "FormatError", "UnsupportedError", "UsageError", "VerificationError", "DeadlineError",
    "__version__",
]
