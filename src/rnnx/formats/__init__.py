"""The table of file formats. Each format is one module with the same few functions:

    read(path: Path, **options) -> Bundle                     (readers)
    write(bundle: Bundle, path: Path, **options) -> list[str] (writers; returns notes for the user)
    run_layer(path: Path, layer: RecurrentLayer, x) -> Y      (optional: run the layer named
        layer.name from the file at `path` in the format's own runtime; x [batch, seq, in],
        Y [batch, seq, directions, hidden]; used by `rnnx verify`)

Modules are imported only when their format is used, so reading an h5 file never
imports torch or tensorflow.
"""

from __future__ import annotations

import importlib
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from ..errors import FormatError, UnsupportedError, UsageError


@dataclass(frozen=True)
class Format:
    name: str
    suffixes: tuple[str, ...]
    module: str
    description: str


FORMATS = (
    Format("keras-h5", (".h5", ".hdf5"), "rnnx.formats.keras2.h5",
           "Keras 2 HDF5 (save_weights / model.save), CuDNN layers included"),
    Format("keras3-weights", (".weights.h5",), "rnnx.formats.keras3.weights",
           "Keras 3 weights file (model.save_weights)"),
    Format("keras", (".keras",), "rnnx.formats.keras3.archive",
           "Keras 3 model archive (config.json + model.weights.h5)"),
    Format("onnx", (".onnx",), "rnnx.formats.onnx_format.model", "ONNX model with LSTM / GRU / RNN nodes"),
    Format("torch", (".pt", ".pth", ".bin", ".ckpt", ".tar"), "rnnx.formats.torch_format.pt",
           "PyTorch state dict or checkpoint (torch.save)"),
    Format("safetensors", (".safetensors",), "rnnx.formats.torch_format.safetensors_file",
           "PyTorch state dict as safetensors"),
    Format("torch-module", (".py",), "rnnx.formats.torch_format.module_source",
           "Python source of an nn.Module with the modules of a .pt target, without weights"),
    Format("torch-model", (".py",), "rnnx.graph.to_torch.writer",
           "Python source of a whole Keras model as an nn.Module with forward(), and its .safetensors beside"),
    Format("rnnx", (".rnnx",), "rnnx.formats.rnnx_file", "rnnx canonical file (safetensors + JSON manifest)"),
    Format("tf-savedmodel", ("saved_model.pb",), "rnnx.formats.tf_format.savedmodel",
           "TensorFlow SavedModel directory of a Keras model (model.save('dir'), TF 2.0-2.15)"),
    Format("tf-checkpoint", (".index",), "rnnx.formats.tf_format.checkpoint",
           "TensorFlow checkpoint: PREFIX.index + PREFIX.data-* (save_weights, tf.train.Saver), or its folder"),
)
TENSORFLOW_READ_ONLY = ("tf-savedmodel", "tf-checkpoint")
BY_NAME = {f.name: f for f in FORMATS}


def names() -> list[str]:
    return [f.name for f in FORMATS]


def by_name(name: str) -> Format:
    try:
        return BY_NAME[name]
    except KeyError:
        raise UsageError(f"Unknown format {name!r}; choose one of: {', '.join(names())}.") from None


def by_suffix(path: Path) -> Format | None:
    name = path.name.lower()
    # longest suffix first, so model.weights.h5 is Keras 3, not Keras 2
    for fmt in sorted(FORMATS, key=lambda f: -max(len(s) for s in f.suffixes)):
        if any(name.endswith(s) for s in fmt.suffixes):
            return fmt
    return None


def for_reading(path: Path) -> Format:
    """The format of an existing file, from its content where the suffix is ambiguous."""
    tensorflow = _tensorflow_format(path)
    if tensorflow is not None:
        return BY_NAME[tensorflow]
    if not path.exists():
        raise UsageError(f"{path}: no such file.")
    if path.is_dir():
        raise UsageError(f"{path} is a folder holding neither a SavedModel (saved_model.pb) nor a TensorFlow "
                         f"checkpoint (a checkpoint file or *.index); give the path of a model or weights file.")
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head == b"\x89HDF\r\n\x1a\n":
        return BY_NAME[_hdf5_flavour(path)]
    if head[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as zf:
                # Windows-made archives may spell member paths with backslashes or a leading ".\"
                members = {"/".join(p for p in m.replace("\\", "/").split("/") if p not in ("", "."))
                           for m in zf.namelist()}
        except (zipfile.BadZipFile, ValueError, EOFError, NotImplementedError) as exc:  # names not UTF-8, odd versions
            raise FormatError(f"{path} looks like a zip archive but cannot be opened ({exc}); it may be "
                              f"truncated or damaged.") from None
        if "config.json" in members and any(m.endswith(".weights.h5") or m.endswith(".h5") for m in members):
            return BY_NAME["keras"]
        if any(m.endswith("/data.pkl") for m in members):
            return BY_NAME["torch"]
        named = by_suffix(path)
        if "config.json" in members or (named is not None and named.name == "keras"):
            return BY_NAME["keras"]  # its reader says which member is missing
        if named is not None and named.name == "torch":
            return BY_NAME["torch"]  # its reader says what a torch.save archive holds
        raise FormatError(f"{path} is a zip archive holding neither a Keras 3 model (config.json and "
                          f"model.weights.h5) nor a torch.save file (<archive>/data.pkl); rnnx cannot read it.")
    sniffed = _sniffed(path, head)
    if sniffed is not None:
        return BY_NAME[sniffed]
    fmt = by_suffix(path)
    if fmt is None or fmt.name in ("keras-h5", "keras3-weights", "keras"):
        raise FormatError(
            f"{path} is not a format rnnx reads (no HDF5, zip, ONNX or safetensors content found); "
            f"rnnx reads {', '.join(s for f in FORMATS for s in f.suffixes)} files.")
    return fmt


TF_CHECKPOINT_FILE = re.compile(r"\.(index|meta|data-\d{5}-of-\d{5})$")


def _tensorflow_format(path: Path) -> str | None:
    """tf-savedmodel or tf-checkpoint when `path` names one: a SavedModel folder or its saved_model.pb,
    a checkpoint folder, a prefix (which is not itself a file), its .index, .meta or .data-* file."""
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return "tf-savedmodel"
        if (path / "checkpoint").is_file() or any(path.glob("*.index")):
            return "tf-checkpoint"
        return None
    if path.name == "saved_model.pb" and path.is_file():
        return "tf-savedmodel"
    if TF_CHECKPOINT_FILE.search(path.name) or (not path.exists() and Path(f"{path}.index").is_file()):
        return "tf-checkpoint"
    from .tf_format.bundle import is_table

    if path.is_file() and is_table(path):
        return "tf-checkpoint"  # a V1 checkpoint: its reader says why it is refused
    return None


# How the content of a file rnnx writes begins, for files whose suffix says something else
# (`rnnx convert a.h5 model.bin --to onnx`, a .rnnx named .safetensors):
ONNX_FIELD_AFTER_IR_VERSION = {0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42}  # producer, ..., graph, opset_import
PICKLE_PROTOCOLS = {bytes([0x80, n]) for n in range(2, 6)}  # torch's legacy format is a pickle
MANIFEST_MARK = b'"rnnx_manifest"'


def _sniffed(path: Path, head: bytes) -> str | None:
    """The format a non-HDF5, non-zip file's first bytes prove, or None to go by its suffix."""
    size = path.stat().st_size
    header_length = int.from_bytes(head, "little") if len(head) == 8 else 0
    if 2 <= header_length <= min(size - 8, 100 << 20):  # safetensors: u64 header length, then JSON
        with open(path, "rb") as fh:
            fh.seek(8)
            header = fh.read(header_length)
        if header[:1] == b"{" and header.rstrip(b" ")[-1:] == b"}":
            if MANIFEST_MARK in header:
                return "rnnx"
            return None if path.name.lower().endswith(".rnnx") else "safetensors"  # the rnnx reader says why
    if head[:2] in PICKLE_PROTOCOLS:
        return "torch"
    if len(head) >= 3 and head[0] == 0x08 and 3 <= head[1] <= 30 and head[2] in ONNX_FIELD_AFTER_IR_VERSION:
        return "onnx"  # ModelProto: ir_version first, then the next field's tag
    return None


def _hdf5_flavour(path: Path) -> str:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            is_keras2 = "layer_names" in f.attrs or "model_weights" in f or "model_config" in f.attrs
            is_keras3 = not is_keras2 and (
                "layers" in f or "vars" in f or any(isinstance(k, str) and "\\" in k for k in f))
    except (OSError, RuntimeError, KeyError, ValueError) as exc:  # h5py's errors on damaged structures
        raise FormatError(f"{path} has an HDF5 signature but cannot be read ({exc}); it may be truncated.") from None
    if is_keras3:
        return "keras3-weights"
    return "keras-h5"


def for_writing(path: Path, to: str | None) -> Format:
    if to:
        return by_name(to)
    fmt = by_suffix(path)
    if fmt is not None and fmt.name in TENSORFLOW_READ_ONLY:
        raise UsageError(f"rnnx reads TensorFlow SavedModels and checkpoints but does not write them; choose "
                         f"another target for {path.name!r}.")
    if fmt is None:
        raise UsageError(
            f"Cannot tell the target format from the name {path.name!r}; "
            f"use a known suffix or --to ({', '.join(names())}).")
    return fmt


def load_module(fmt: Format, need: str) -> ModuleType:
    try:
        module = importlib.import_module(fmt.module)
    except ModuleNotFoundError as exc:
        if exc.name == fmt.module:
            raise UnsupportedError(f"The {fmt.name} format is not supported yet by this rnnx.") from None
        raise
    if not hasattr(module, need):
        verb = {"read": "read", "write": "write", "run_layer": "run for verification"}[need]
        raise UnsupportedError(f"rnnx cannot {verb} {fmt.name} files ({fmt.description}).")
    return module


def unheld_call_options(layers, target: str, advice: str, backwards_kept: bool = False) -> list[str]:
    """Notes for Keras call options that a weights-only target does not hold, so none is dropped
    silently along a chain: go_backwards (unless the target keeps it, as ONNX direction=reverse
    does) and a Bidirectional merge_mode other than concat."""
    notes = []
    for layer in layers:
        unheld = []
        if layer.num_directions == 1 and layer.options.get("go_backwards") and not backwards_kept:
            unheld.append("go_backwards=True")
        mode = layer.options.get("merge_mode")
        if layer.num_directions == 2 and mode not in (None, "concat"):
            unheld.append(f"merge_mode={mode!r}")
        if unheld:
            notes.append(f"{layer.name}: the source layer has {' and '.join(unheld)}, which {target} does not "
                         f"hold; {advice}.")
    return notes
