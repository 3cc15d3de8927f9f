"""rnnx reads TensorFlow's files without TensorFlow: inspect and convert of SavedModels and checkpoints,
run as a user runs them, never import tensorflow, tf_keras, keras or torch."""

import json
import subprocess
import sys

import pytest

HEAVY = ("tensorflow", "tf_keras", "keras", "torch", "jax")
PROBE = """
import json, sys
from rnnx.cli import main
# inspect reads in a watchdog child by default: --timeout 0 keeps the work in this process,
# so its sys.modules tell what reading imported
rc = main(sys.argv[1:] + (["--timeout", "0"] if sys.argv[1] == "inspect" else []))
heavy = sorted(m for m in %r if m in sys.modules)
print("PROBE " + json.dumps({"rc": rc, "heavy": heavy}), file=sys.stderr)
""" % (HEAVY,)


def probe(*args):
    result = subprocess.run([sys.executable, "-c", PROBE, *map(str, args)], capture_output=True, text=True,
                            timeout=300)
    line = next(l for l in result.stderr.splitlines() if l.startswith("PROBE "))
    return json.loads(line[len("PROBE "):])


@pytest.mark.parametrize("source", ["tensorflow/iteam1_lstm_savedmodel_tf26",
                                    "tensorflow/dinornn_gru_ckpt_sharded/ckpt_100"])
def test_inspect_and_convert_import_no_framework(source, corpus, tmp_path):
    src = corpus / source
    for args in (("inspect", src), ("convert", src, tmp_path / "out.onnx"),
                 ("convert", src, tmp_path / "out.safetensors")):
        outcome = probe(*args)
        assert outcome == {"rc": 0, "heavy": []}, (args, outcome)
