"""`.keras`: the Keras 3 model archive (a zip of metadata.json, config.json, model.weights.h5).

Reading (any Keras 3 release; member names with backslashes, as an archive made on
Windows may hold, are accepted). Nothing is extracted: config.json and metadata.json are
read into memory, model.weights.h5 is read in place and its variables are LazyArrays read
when used (member.py). A member whose name leaves the archive's folder (`../x`, `/x`,
`C:x`), a declared size beyond MAX_MEMBER_BYTES, a compression ratio no real Keras file has,
or more bytes claimed than the archive holds is refused before anything is read. Keras
3's other weights formats (`model.weights.npz`, sharded weights) are refused. Bundle conventions:

- source: format "keras", has_architecture True, keras_version (metadata.json),
  model_config = the parsed config.json exactly as stored (Keras 3 schema:
  module/class_name/config/registered_name/build_config).
- items in the order of the config's layers (nested models flattened): a RecurrentLayer
  per LSTM / GRU / SimpleRNN layer and per Bidirectional wrapping one, named by the
  Keras layer name (config name), activations and reset_after from the config,
  provenance class_name (the cell's Keras class: LSTM, GRU or SimpleRNN, also under a
  wrapper), wrapper ("Bidirectional" or "TimeDistributed", the outermost, when wrapped; a
  TimeDistributed layer's recurrent layer is named after the TimeDistributed), keras_version and
  keras3_path (where the layer sits in model.weights.h5), options return_sequences, return_state, go_backwards,
  stateful, unroll, zero_output_for_mask, dropout, recurrent_dropout and, for
  Bidirectional, merge_mode. Every other layer with variables is an
  OpaqueLayer(Keras layer name, Keras class name, weights in Keras 3 variable order named
  by their path relative to the layer: `vars/0`, `vars/1`, or `layer/vars/0` inside a
  TimeDistributed), options["keras3_path"].

Writing needs an architecture: a `.keras` source or a `.weights.h5` read with `--config`
(a Keras 3 `model.to_json()`), whose config is kept as is, or a Keras 2 source with a model
config (.h5 full model, or a weights file with --config), which config.py translates to
the Keras 3 schema. Weights go to the paths Keras 3 derives
from that config (see layout.py). Sources without an architecture (a weights file,
PyTorch, ONNX) are refused with a pointer to `.weights.h5` or `--config`.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
import zipfile
from pathlib import Path

from ... import __version__
from ...canonical import Bundle, RecurrentLayer
from ...errors import FormatError, UnsupportedError
from ...io import atomic_output, safe_member_name
from . import layout
from .member import ArchiveMember
from .weights import (bundle_from_h5, changed_activation_layers, deviation_notes, refuse_activations, reopened,
                      run_keras3_layer)

CONFIG = "config.json"
METADATA = "metadata.json"
WEIGHTS = "model.weights.h5"
MAX_MEMBER_BYTES = 8 << 30  # no single member above this is read
MAX_JSON_BYTES = 64 << 20
MAX_RATIO = 1100  # deflate cannot compress better than about 1032:1
# The Keras release whose config schema rnnx writes (checked against it in the tests).
SCHEMA_VERSION = "3.15.1"


# --- reading ----------------------------------------------------------------------


def read(path: Path, **_options) -> Bundle:
    path = Path(path)
    members, weights, names = read_members(path)
    config = _json(members, CONFIG, path)
    metadata = _json(members, METADATA, path) if METADATA in members else {}
    if weights is None:
        sharded = [m for m in names if m.endswith(".json") and m not in (CONFIG, METADATA)]
        hint = " (its weights are sharded, which rnnx does not read)" if sharded else ""
        raise FormatError(f"{path} has no {WEIGHTS} member{hint}; it is not a complete .keras archive.")
    source = {"format": "keras", "has_architecture": True, "keras_version": metadata.get("keras_version"),
              "model_config": config}
    try:
        with weights.h5() as h5:
            return bundle_from_h5(h5, weights.where, source, lambda: reopened(lambda: weights.h5(checked=True),
                                                                              weights.where),
                                  weights.size, model_config=config, map_plain=weights.mapped)
    except (OSError, RuntimeError) as exc:  # h5py raises RuntimeError on damaged structures
        raise FormatError(f"{path}: its {WEIGHTS} cannot be read as HDF5 ({exc}).") from None
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise FormatError(f"{path}: config.json does not describe the weights it comes with "
                          f"({type(exc).__name__}: {exc}).") from None


def read_members(path: Path) -> tuple[dict[str, bytes], ArchiveMember | None, list[str]]:
    """config.json and metadata.json (in memory), the weights member (read in place, see member.py; None when
    absent) and every member's name, after checking every entry is safe."""
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            names = [_safe_name(info.filename, path) for info in infos]
            if len(set(names)) != len(names):
                raise FormatError(f"{path} holds two members with the same name; it is not a Keras archive.")
            if sum(info.compress_size for info in infos) > size:
                raise FormatError(f"{path} claims more compressed bytes than the file holds; it is truncated "
                                  f"or forged.")
            out, weights = {}, None
            for name, info in zip(names, infos):
                if name not in (CONFIG, METADATA, WEIGHTS):
                    continue
                limit = MAX_JSON_BYTES if name.endswith(".json") else MAX_MEMBER_BYTES
                if info.file_size > limit or info.file_size > max(info.compress_size, 1) * MAX_RATIO:
                    raise FormatError(f"{path}: the member {name} declares {info.file_size} bytes, more than rnnx "
                                      f"reads from a .keras archive (or an impossible compression ratio).")
                if name == WEIGHTS:
                    weights = ArchiveMember(path, zf, info, name)
                    continue
                with zf.open(info) as fh:
                    data = fh.read(info.file_size + 1)
                if len(data) != info.file_size:
                    raise FormatError(f"{path}: the member {name} does not hold the {info.file_size} bytes it "
                                      f"declares.")
                out[name] = data
            return out, weights, names
    except zipfile.BadZipFile as exc:
        raise FormatError(f"{path} is not a readable zip archive ({exc}).") from None
    except (zipfile.LargeZipFile, NotImplementedError, RuntimeError, EOFError, ValueError) as exc:
        raise FormatError(f"{path}: a member cannot be read ({exc}).") from None
    except OSError as exc:  # a damaged directory entry puts a member's header before the file's start
        raise FormatError(f"{path}: a member cannot be read ({exc.strerror or exc}); the archive is damaged.") from None


def _safe_name(name: str, path: Path) -> str:
    """A member name with backslashes made forward slashes; refused when it leaves the archive."""
    normal = safe_member_name(name)
    if normal is None:
        raise FormatError(f"{path} holds a member named {name!r}, which points outside the archive; "
                          f"rnnx refuses such archives.")
    return normal


def _json(members: dict, name: str, path: Path) -> dict:
    if name not in members:
        raise FormatError(f"{path} has no {name} member; it is not a .keras archive.")
    try:
        value = json.loads(members[name].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{path}: {name} is not valid JSON ({exc}).") from None
    if not isinstance(value, dict):
        raise FormatError(f"{path}: {name} does not hold a JSON object.")
    return value


# --- writing ----------------------------------------------------------------------


def write(bundle: Bundle, path: Path, accept_activation_change: bool = False, layer: str | None = None,
          **_options) -> list[str]:
    import h5py

    path = Path(path)
    config, notes = keras3_config_of(bundle, path, accept_activation_change, layer)
    refuse_activations(bundle, accept_activation_change)
    changed = changed_activation_layers(bundle, accept_activation_change)
    try:
        entries, more = layout.entries_from_bundle(bundle, config, accept_activation_change, where=str(path))
    except (KeyError, TypeError, IndexError, AttributeError, ValueError) as exc:  # an entry missing or mistyped
        raise FormatError(f"{bundle.source.get('path', 'The source')}: its model config is malformed "
                          f"({type(exc).__name__}: {exc}); the file is damaged or not written by Keras.") from None
    keras_version = bundle.source.get("keras_version") if bundle.source.get("format") == "keras" else None
    with atomic_output(path) as tmp:
        # the weights go to a scratch file beside the output, tensor by tensor, then into the zip in pieces
        # (as Keras does for a large model): the model is never held in memory
        scratch = tmp.with_name(tmp.name + ".weights.h5")
        try:
            # written through a Python file object, as Keras writes it to memory: the same bytes as before
            with open(scratch, "xb+") as fh, h5py.File(fh, "w") as h5:
                measured = layout.write_tree(h5, entries, model_name=config.get("config", {}).get("name"),
                                             measured=changed)
            metadata = {"keras_version": keras_version or SCHEMA_VERSION,
                        "date_saved": time.strftime("%Y-%m-%d@%H:%M:%S"), "producer": f"rnnx {__version__}"}
            with zipfile.ZipFile(tmp, "w") as zf:
                zf.writestr(METADATA, json.dumps(metadata))
                zf.writestr(CONFIG, json.dumps(config))
                _write_member(zf, WEIGHTS, scratch)
        finally:
            scratch.unlink(missing_ok=True)
    return list(dict.fromkeys(deviation_notes(changed, measured) + notes)) + more


def _write_member(zf: zipfile.ZipFile, name: str, src: Path) -> None:
    """The file `src` as the member `name`, copied in pieces: the entry `zf.writestr(name, data)` makes."""
    info = zipfile.ZipInfo(name, date_time=time.localtime(time.time())[:6])
    info.compress_type = zf.compression
    info.external_attr = 0o600 << 16
    info.file_size = src.stat().st_size  # decides zip64 as writestr does
    with open(src, "rb") as fh, zf.open(info, "w") as out:
        shutil.copyfileobj(fh, out, 1 << 20)


def keras3_config_of(bundle: Bundle, path: Path, accept_activation_change: bool = False,
                     layer: str | None = None) -> tuple[dict, list[str]]:
    """The Keras 3 config.json for `bundle` and notes, or UnsupportedError saying what to write instead."""
    source = bundle.source
    config = source.get("model_config")
    if layer is not None:
        raise UnsupportedError(f"Cannot write {path} with --layer: a .keras file holds a whole model. "
                               f"Write the one layer to a .weights.h5 file instead.")
    if not source.get("has_architecture") or not config:
        raise UnsupportedError(
            f"Cannot write {path}: the source holds weights but no model architecture, and a .keras file needs "
            f"both. Write a .weights.h5 file and load it into your model, or, for a Keras weights file, give the "
            f"architecture with --config model.json (from model.to_json()).")
    if source.get("format") in ("keras", "keras3-weights"):  # already Keras 3's schema
        config = copy.deepcopy(config)
        notes = []
        if config.pop("compile_config", None):
            notes.append("the optimizer and compile settings are not carried over: load_model gives an uncompiled "
                         "model (compile it again to train).")
        return config, notes
    if source.get("format") == "keras-h5":
        from . import config as keras3_config

        return keras3_config.translate(config, {l.name: l for l in bundle.layers}, accept_activation_change,
                                       source=source.get("path"))
    raise UnsupportedError(f"Cannot write {path}: rnnx translates only Keras model configs to .keras, and this "
                           f"source is {source.get('format')}. Write a .weights.h5 file instead.")


def refusal(layer: RecurrentLayer) -> str | None:
    return layout.refusal(layer)


def run_layer(path: Path, layer: RecurrentLayer, x):
    """Run the layer named `layer.name` of the archive with Keras 3 (its own activations and variables)."""
    bundle = read(path)
    for stored in bundle.layers:
        if stored.name == layer.name:
            return run_keras3_layer(stored, x)
    raise FormatError(f"{path} has no recurrent layer named {layer.name!r}.")
