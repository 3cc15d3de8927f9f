"""Layers rnnx's native export cannot convert: refused with the layer's name and class, exit 2, no output."""

import pytest


@pytest.mark.parametrize("name, layer, class_name", [
    ("k2_lambda.h5", "times_two", "Lambda"),
    ("k2_custom.h5", "my_scale", "Scale"),
])
def test_refused_with_layer_class_and_engine_hint(name, layer, class_name, models_dir, tmp_path, cli):
    dst = tmp_path / "model.onnx"
    result = cli("convert", models_dir / name, dst)
    assert result.returncode == 2, result.stderr
    message = result.stderr.strip()
    assert message.count("\n") == 0 and "Traceback" not in message
    assert repr(layer) in message and class_name in message and "--engine tf2onnx" in message
    assert not dst.exists() and list(tmp_path.iterdir()) == []


def test_weights_only_file_without_config_is_a_usage_error(corpus, tmp_path):
    """A weights file whose architecture is unknown cannot become a whole-model graph."""
    from rnnx.errors import UsageError
    from rnnx.graph import export_model

    import rnnx

    bundle = rnnx.load(corpus / "keras2" / "lstm_chem_weights.hdf5")
    bundle.source["has_architecture"] = True  # as if asked for a whole model
    with pytest.raises(UsageError, match="--config"):
        export_model(bundle, tmp_path / "model.onnx")
    assert not (tmp_path / "model.onnx").exists()


def test_a_layer_config_missing_an_entry_is_a_format_error(models_dir, tmp_path, cli):
    """A full-model file whose config lost an entry a converter needs (Permute without `dims`)."""
    import json
    import shutil

    import h5py

    src = tmp_path / "damaged.h5"
    shutil.copy(models_dir / "k2_layers.h5", src)
    with h5py.File(src, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        permutes = [layer for layer in config["config"]["layers"] if layer["class_name"] == "Permute"]
        assert permutes, "the fixture holds a Permute layer"
        del permutes[0]["config"]["dims"]
        f.attrs["model_config"] = json.dumps(config)
    result = cli("convert", src, tmp_path / "model.onnx")
    assert result.returncode == 2 and "unexpected" not in result.stderr and "Traceback" not in result.stderr
    assert "Permute" in result.stderr and "incomplete or malformed" in result.stderr, result.stderr
    assert not (tmp_path / "model.onnx").exists()


def test_a_malformed_model_config_is_a_format_error(models_dir, tmp_path, cli):
    """inbound_nodes that are not a list of calls: one sentence naming the file, not an unexpected TypeError."""
    import json
    import shutil

    import h5py

    src = tmp_path / "damaged.h5"
    shutil.copy(models_dir / "k2_states.h5", src)
    with h5py.File(src, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        next(layer for layer in config["config"]["layers"] if layer.get("inbound_nodes"))["inbound_nodes"] = 5
        f.attrs["model_config"] = json.dumps(config)
    result = cli("convert", src, tmp_path / "model.onnx")
    assert result.returncode == 2 and "unexpected" not in result.stderr and "Traceback" not in result.stderr
    assert f"{src}: its Keras model config is malformed" in result.stderr, result.stderr
    assert not (tmp_path / "model.onnx").exists()


def test_a_config_whose_graph_does_not_type_check_is_a_format_error(tmp_path, cli):
    """A Concatenate call whose inputs were emptied in config.json: ONNX shape inference fails on the graph."""
    import json
    import zipfile

    from tests.conftest import FIXTURES

    src = tmp_path / "damaged.keras"
    with zipfile.ZipFile(FIXTURES / "keras3" / "mixed.keras") as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    config = json.loads(members["config.json"])
    concat = next(layer for layer in config["config"]["layers"] if layer["class_name"] == "Concatenate")
    concat["inbound_nodes"][0]["args"][0] = {}
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(src, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    result = cli("convert", src, tmp_path / "model.onnx")
    assert result.returncode == 2 and "unexpected" not in result.stderr and "Traceback" not in result.stderr
    assert f"{src}: the graph its Keras model config describes does not type-check" in result.stderr, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged.keras"]
