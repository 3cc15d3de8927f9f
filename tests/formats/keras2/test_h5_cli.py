"""`rnnx` on Keras 2 HDF5 files as a user runs it: bad input gives exit 2 and a plain sentence,
nothing partial is left behind, and inspect / convert never import TensorFlow or torch."""

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest

HEAVY = ("tensorflow", "tf_keras", "keras", "torch", "jax")
TIMINGS: dict[str, float] = {}
PROBE = """
import json, sys, time
from rnnx.cli import main
start = time.perf_counter()
# inspect reads in a watchdog child by default: --timeout 0 keeps the work in this process,
# so its sys.modules tell what reading imported
rc = main(sys.argv[1:] + (["--timeout", "0"] if sys.argv[1] == "inspect" else []))
seconds = time.perf_counter() - start
heavy = sorted(m for m in %r if m in sys.modules)
print("PROBE " + json.dumps({"rc": rc, "seconds": seconds, "heavy": heavy}), file=sys.stderr)
""" % (HEAVY,)


def assert_plain_failure(result, *words):
    assert result.returncode == 2, (result.stdout, result.stderr)
    err = result.stderr.strip()
    assert "Traceback" not in err and err.startswith("rnnx: ")
    assert len(err.splitlines()) == 1 and err.count(". ") <= 2, err
    for word in words:
        assert word in err, (word, err)


@pytest.fixture
def out_dir(tmp_path):
    d = tmp_path / "out"
    d.mkdir()
    return d


def _keras_like(path, layer, weights):
    """An HDF5 file with Keras 2's structure holding `weights` [(name, shape)] in one layer group."""
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([layer.encode()])
        f.attrs["keras_version"] = b"2.2.4"
        f.attrs["backend"] = b"tensorflow"
        g = f.create_group(layer)
        g.attrs["weight_names"] = np.array([n.encode() for n, _ in weights])
        for name, shape in weights:
            g.create_dataset(name, data=rng.standard_normal(shape).astype(np.float32))
    return path


def test_truncated_file(cli, fixtures, tmp_path, out_dir):
    src = tmp_path / "cut.h5"
    data = (fixtures / "keras2" / "cudnn_stack_weights.h5").read_bytes()
    src.write_bytes(data[: len(data) // 2])
    assert_plain_failure(cli("inspect", src), str(src))
    assert_plain_failure(cli("convert", src, out_dir / "out.h5"), str(src))
    assert list(out_dir.iterdir()) == []


def test_not_hdf5(cli, tmp_path, out_dir):
    src = tmp_path / "notes.h5"
    src.write_text("these are not weights\n")
    assert_plain_failure(cli("convert", src, out_dir / "out.h5"), str(src))
    assert list(out_dir.iterdir()) == []


def test_hdf5_that_is_not_keras(cli, tmp_path, out_dir):
    src = tmp_path / "data.h5"
    with h5py.File(src, "w") as f:
        f.create_dataset("signal", data=np.arange(10.0))
    assert_plain_failure(cli("inspect", src), str(src), "not a Keras 2 file")
    assert_plain_failure(cli("convert", src, out_dir / "out.h5"), "not a Keras 2 file")
    assert list(out_dir.iterdir()) == []


def test_shapes_that_fit_no_layout(cli, tmp_path, out_dir):
    src = _keras_like(tmp_path / "odd.h5", "odd_rnn", [
        ("odd_rnn/kernel:0", (4, 10)), ("odd_rnn/recurrent_kernel:0", (2, 10)), ("odd_rnn/bias:0", (10,))])
    assert_plain_failure(cli("inspect", src), "'odd_rnn'", "fit no Keras 2")
    assert_plain_failure(cli("convert", src, out_dir / "out.h5"), "(2, 10)")
    assert list(out_dir.iterdir()) == []


def test_recurrent_kernel_without_kernel(cli, tmp_path):
    src = _keras_like(tmp_path / "odd.h5", "cell", [("cell/recurrent_kernel:0", (3, 12)), ("cell/bias:0", (12,))])
    assert_plain_failure(cli("inspect", src), "'cell'", "recurrent_kernel")


def test_unknown_layer_class_holding_recurrent_weights(cli, fixtures, tmp_path, out_dir):
    src = tmp_path / "custom.h5"
    src.write_bytes((fixtures / "keras2" / "cpu_mix_full.h5").read_bytes())
    with h5py.File(src, "a") as f:
        config = json.loads(f.attrs["model_config"])
        for entry in config["config"]["layers"]:
            if entry["config"]["name"] == "lstm_hard":
                entry["class_name"] = "PeepholeLSTM"
        f.attrs["model_config"] = json.dumps(config)
    assert_plain_failure(cli("inspect", src), "'lstm_hard'", "'PeepholeLSTM'")
    assert_plain_failure(cli("convert", src, out_dir / "out.h5"), "'PeepholeLSTM'")
    assert list(out_dir.iterdir()) == []


def test_config_that_does_not_fit_the_weights(cli, fixtures, corpus, out_dir):
    src = fixtures / "keras2" / "cudnn_stack_weights.h5"
    arch = corpus / "keras2" / "lstm_chem_model_arch.json"
    assert_plain_failure(cli("convert", src, out_dir / "out.h5", "--config", arch))
    assert list(out_dir.iterdir()) == []


def test_config_that_is_not_text(cli, fixtures, tmp_path, out_dir):
    arch = tmp_path / "model.json"
    arch.write_bytes(b"\xff\xfe\x00binary")
    src = fixtures / "keras2" / "cudnn_stack_weights.h5"
    assert_plain_failure(cli("convert", src, out_dir / "out.keras", "--config", arch), str(arch), "not text")
    assert list(out_dir.iterdir()) == []


def test_destination_equal_to_source(cli, fixtures, tmp_path):
    src = tmp_path / "model.h5"
    src.write_bytes((fixtures / "keras2" / "cudnn_stack_full.h5").read_bytes())
    before = src.read_bytes()
    assert_plain_failure(cli("convert", src, src), "source")
    assert src.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["model.h5"]


def test_unwritable_destination(cli, fixtures, tmp_path):
    missing = tmp_path / "no" / "such" / "folder" / "out.h5"
    assert_plain_failure(cli("convert", fixtures / "keras2" / "cudnn_stack_full.h5", missing), "does not exist")
    assert list(tmp_path.iterdir()) == []


def test_cudnn_refusal_leaves_nothing(cli, fixtures, out_dir):
    result = cli("convert", fixtures / "keras2" / "cpu_mix_full.h5", out_dir / "gpu.h5", "--cudnn")
    assert_plain_failure(result, "'lstm_hard'", "HardSigmoid")
    assert list(out_dir.iterdir()) == []


def test_cli_convert_prints_what_changed(cli, fixtures, out_dir):
    result = cli("convert", fixtures / "keras2" / "cudnn_bidir_full.h5", out_dir / "cpu.h5", "--verify")
    assert result.returncode == 0, result.stderr
    assert "bi_concat: CuDNNLSTM -> LSTM" in result.stdout and "bi_sum: CuDNNGRU -> GRU(reset_after=True)" \
        in result.stdout
    assert "matches its source" in result.stdout
    assert sorted(p.name for p in out_dir.iterdir()) == ["cpu.h5"]


# ----------------------------------------------------------------------------- no heavy imports

@pytest.fixture(scope="module")
def big_cudnn(tmp_path_factory):
    """2 x CuDNNLSTM(512), weights only, built with tf_keras (about 17 MB)."""
    import tf_keras
    from tf_keras.src.layers.rnn.cudnn_lstm import CuDNNLSTM

    model = tf_keras.Sequential([tf_keras.Input((None, 512)), CuDNNLSTM(512, return_sequences=True),
                                 CuDNNLSTM(512)])
    rng = np.random.default_rng(0)
    model.set_weights([rng.uniform(-0.1, 0.1, w.shape).astype(np.float32) for w in model.get_weights()])
    path = tmp_path_factory.mktemp("big") / "cudnn512_weights.h5"
    model.save_weights(str(path))
    return path


def _probe(*args):
    result = subprocess.run([sys.executable, "-c", PROBE, *map(str, args)], capture_output=True, text=True,
                            timeout=600)
    line = [l for l in result.stderr.splitlines() if l.startswith("PROBE ")]
    assert line, result.stderr
    return json.loads(line[-1][6:]), result


@pytest.mark.parametrize("command", ["inspect", "inspect-json", "convert-h5", "convert-cudnn", "convert-rnnx"])
def test_inspect_and_convert_import_no_framework(big_cudnn, tmp_path, command):
    args = {"inspect": ["inspect", big_cudnn], "inspect-json": ["inspect", "--json", big_cudnn],
            "convert-h5": ["convert", big_cudnn, tmp_path / "cpu.h5"],
            "convert-cudnn": ["convert", big_cudnn, tmp_path / "gpu.h5", "--cudnn"],
            "convert-rnnx": ["convert", big_cudnn, tmp_path / "c.rnnx"]}[command]
    probe, result = _probe(*args)
    assert probe["rc"] == 0, result.stderr
    assert probe["heavy"] == [], f"{command} imported {probe['heavy']}"
    TIMINGS[command] = probe["seconds"]
    print(f"\n{command} on 2 x CuDNNLSTM(512): {probe['seconds']:.3f} s in main()")


def test_verify_of_h5_without_tf_keras_says_which_extra(fixtures, tmp_path):
    """With tf_keras absent (import blocked), verify of an .h5 target exits 2 naming the tf extra."""
    src = fixtures / "keras2" / "cudnn_stack_full.h5"
    code = ("import sys; sys.modules['tf_keras'] = None; from rnnx.cli import main; "
            f"sys.exit(main(['verify', {str(src)!r}, {str(src)!r}]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert_plain_failure(result, "tf_keras", "rnnx[tf]")


def test_header_claiming_more_than_the_file_holds(cli, tmp_path, out_dir):
    src = tmp_path / "liar.h5"
    with h5py.File(src, "w") as f:
        f.attrs["layer_names"] = np.array([b"dense"])
        f.attrs["keras_version"] = b"2.2.4"
        g = f.create_group("dense")
        g.attrs["weight_names"] = np.array([b"dense/kernel:0"])
        g.create_dataset("dense/kernel:0", shape=(100000, 100000), dtype="float32")  # never written
    assert_plain_failure(cli("convert", src, out_dir / "out.h5"), "'dense/kernel:0'", "claims")
    assert list(out_dir.iterdir()) == []


def test_keras1_file_is_refused(cli, tmp_path):
    src = _keras_like(tmp_path / "old.h5", "lstm_1", [("lstm_1_W", (3, 4)), ("lstm_1_U", (4, 4))])
    with h5py.File(src, "a") as f:
        del f.attrs["keras_version"]
    assert_plain_failure(cli("inspect", src), "Keras 1")


def test_damaged_files_give_plain_errors(fixtures, tmp_path, capsys):
    """Random byte damage (seeded) to a full-model file: every run ends in exit 0 (the damage hit
    weight values, which HDF5 cannot detect) or exit 2 with a sentence; never an unexpected error."""
    from rnnx.cli import main

    original = (fixtures / "keras2" / "cudnn_bidir_full.h5").read_bytes()
    rng = np.random.default_rng(3)
    codes = []
    for trial in range(40):
        data = bytearray(original)
        for _ in range(rng.integers(1, 30)):
            data[rng.integers(0, len(data))] = rng.integers(0, 256)
        src = tmp_path / f"damaged{trial}.h5"
        src.write_bytes(bytes(data))
        out = tmp_path / "out" / f"{trial}.h5"
        out.parent.mkdir(exist_ok=True)
        codes.append(main(["convert", str(src), str(out)]))
        err = capsys.readouterr().err
        assert codes[-1] in (0, 2) and "unexpected" not in err and "Traceback" not in err, err
        assert codes[-1] == 0 or not out.exists()
    assert codes.count(2) > 20


def test_damage_h5py_reports_as_a_missing_object_is_a_plain_error(cli, fixtures, tmp_path, out_dir):
    """Byte 113 of this file sits in the root group's symbol table: h5py then raises KeyError on a
    plain `"model_weights" in f` (found by fuzzing)."""
    data = bytearray((fixtures / "keras2" / "cpu_mix_weights.h5").read_bytes())
    data[113] = 122
    src = tmp_path / "damaged.h5"
    src.write_bytes(bytes(data))
    assert_plain_failure(cli("convert", src, out_dir / "out.onnx"), str(src), "cannot be read")
    assert list(out_dir.iterdir()) == []


def test_an_attribute_of_unknown_type_is_a_plain_error(cli, fixtures, tmp_path, out_dir):
    """Byte 1010 of this file is the string encoding of an attribute: h5py then raises TypeError
    ("Unknown string encoding") when reading it (found by fuzzing)."""
    data = bytearray((fixtures / "keras2" / "cudnn_bidir_full.h5").read_bytes())
    data[1010] = 205
    src = tmp_path / "damaged.h5"
    src.write_bytes(bytes(data))
    assert_plain_failure(cli("convert", src, out_dir / "out.onnx"), str(src), "damaged")
    assert list(out_dir.iterdir()) == []


def test_a_shape_whose_size_overflows_int64_is_refused_before_reading(cli, tmp_path):
    src = tmp_path / "overflow.h5"
    with h5py.File(src, "w") as f:
        f.attrs["keras_version"] = "2.3.1"
        f.attrs["backend"] = "tensorflow"
        f.attrs["layer_names"] = np.array([b"lstm"])
        group = f.create_group("lstm")
        group.attrs["weight_names"] = np.array([b"lstm/kernel:0"])
        # 2**65 elements: an int64 product of the dims wraps around to 0
        group.create_group("lstm").create_dataset("kernel:0", shape=(2**31, 2**31, 8), dtype="f4", chunks=(1, 1, 8))
    assert_plain_failure(cli("inspect", src), "claims 147573952589676412928 bytes")
