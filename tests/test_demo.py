"""`rnnx demo`: the bundled example converts and its numbers are tf_keras's own."""

import json
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np

CHECK_IMPORTS = """
import sys
from rnnx.cli import main
code = main(["demo"])
heavy = sorted(m for m in ("tensorflow", "tf_keras", "keras", "torch") if m in sys.modules)
print("HEAVY=" + ",".join(heavy))
raise SystemExit(code)
"""


def test_demo_reproduces_tf_keras_without_importing_frameworks():
    proc = subprocess.run([sys.executable, "-c", CHECK_IMPORTS], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "HEAVY=\n" in proc.stdout
    rows = [l for l in proc.stdout.splitlines() if l.startswith(("rnnx ->", "web recipe"))]
    assert len(rows) == 4
    errors = {row.rsplit(None, 1)[0]: float(row.rsplit(None, 1)[1]) for row in rows}
    for name, err in errors.items():
        if name.startswith("rnnx"):
            assert err <= 1e-5, name
        else:
            assert err > 1e-2, "the naive recipe should visibly fail on this model"


def test_demo_expected_outputs_are_tf_kerass_own():
    """Recompute the shipped expectation with tf_keras's converting load_weights."""
    import tf_keras as k

    data = resources.files("rnnx") / "data"
    with resources.as_file(data / "demo_cudnnlstm.h5") as src, resources.as_file(data / "demo_expected.npz") as npz:
        expected = dict(np.load(npz))
        config = json.loads(__import__("h5py").File(src, "r").attrs["model_config"])
        for layer in config["config"]["layers"]:
            if layer["class_name"] == "CuDNNLSTM":
                layer["class_name"] = "LSTM"
        cpu = k.models.model_from_json(json.dumps(config))
        with tempfile.TemporaryDirectory() as tmp:
            import h5py

            with h5py.File(src, "r") as f, h5py.File(Path(tmp) / "w.h5", "w") as out:
                for key, value in f["model_weights"].attrs.items():
                    out.attrs[key] = value
                for name in f["model_weights"]:
                    f.copy(f["model_weights"][name], out, name)
            cpu.load_weights(Path(tmp) / "w.h5")
    np.testing.assert_allclose(cpu.predict(expected["x"], verbose=0), expected["output"], atol=1e-6, rtol=0)
