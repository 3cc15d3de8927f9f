"""Writing ONNX models whose weights never sit in the protobuf, with or without external data.

While a model is built, every initializer of at least INLINE_BYTES goes straight to a scratch
file (`WeightStore`) and the TensorProto keeps only its name, type, shape and where its bytes
are: the model in memory is an external-data model a few kilobytes long. The checker runs on
that skeleton (the stored tensors stand in as typed graph inputs), never on the weights.

`finish` then writes one of two things:
- inline (the default up to protobuf's 2 GiB limit): one `.onnx` file, streamed field by
  field with the weights copied from the scratch file. Protobuf writes a message's fields in
  field-number order, so the bytes are exactly what `onnx.save` writes for the same model held
  in memory, without ever holding it there.
- external data (automatic above the limit, or asked for): ONNX's convention, `model.onnx` and
  one `model.onnx.data` beside it, named by a relative path; the scratch file becomes the data
  file. Offsets are page aligned so that onnxruntime can map the tensors instead of copying.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from ... import progress
from ...errors import UnsupportedError
from ...lazy import chunks, is_lazy
from ..tf_format.protos import encode_varint as _varint
from ..tf_format.protos import read_varint as _read_varint

INLINE_BYTES = 1024  # smaller tensors (shape constants, scalars) stay in the protobuf, as onnx.save does
PROTOBUF_LIMIT = 2**31 - 1  # the largest message protobuf serializes or parses
ALIGNMENT = 4096
COPY_CHUNK = 16 << 20

# Field numbers of onnx.proto that the streamed writer splices around.
MODEL_GRAPH = 7
GRAPH_INITIALIZER = 5
TENSOR_RAW_DATA = 9


def data_file_name(model_path: Path) -> str:
    """The external data file of `model.onnx`: `model.onnx.data`, beside it."""
    return f"{Path(model_path).name}.data"


class WeightStore:
    """The bytes of a model's large initializers: a lazy tensor (rnnx.lazy) is computed only when the model
    is written, straight into the output file; any other goes to `scratch` as it is made."""

    def __init__(self, scratch: Path, location: str):
        self.scratch = Path(scratch)
        self.location = location  # the data file's name as the model will refer to it
        self.spans: dict[str, tuple[int | None, int]] = {}  # name -> (offset in scratch or None: pending, length)
        self.pending: dict[str, object] = {}  # name -> the lazy tensor to write when the model is written
        self._file = open(self.scratch, "wb")
        self._end = 0

    # --- while building ------------------------------------------------------------
    def tensor(self, array, name: str) -> TensorProto:
        """A TensorProto for `array` (numpy or array-like) whose data goes to the store when large."""
        dtype = np.dtype(array.dtype)
        nbytes = int(np.prod(array.shape, dtype=object)) * dtype.itemsize
        if nbytes < INLINE_BYTES or dtype.kind not in "fiub":
            return onnx.numpy_helper.from_array(np.ascontiguousarray(np.asarray(array)), name)
        tensor = TensorProto(name=name, dims=[int(d) for d in array.shape],
                             data_type=helper.np_dtype_to_tensor_dtype(dtype))
        if is_lazy(array):  # written when the model is: one pass fewer over its bytes than via scratch
            if name in self.spans:
                raise ValueError(f"two initializers are named {name!r}")
            self.spans[name] = (None, nbytes)
            self.pending[name] = array
            tensor.data_location = TensorProto.EXTERNAL
            return tensor
        self._append(name, chunks(array, dtype.newbyteorder("<")), tensor)
        return tensor

    def keep(self, tensor: TensorProto) -> TensorProto:
        """Move a made TensorProto's raw data (when large) into the store; the proto is changed in place."""
        if tensor.HasField("raw_data") and len(tensor.raw_data) >= INLINE_BYTES:
            self._append(tensor.name, tensor.raw_data, tensor)
            tensor.ClearField("raw_data")
        return tensor

    def _append(self, name: str, data, tensor: TensorProto) -> None:
        if name in self.spans and self.spans[name][0] is not None:
            raise ValueError(f"two initializers are named {name!r}")
        offset = self._end + (-self._end % ALIGNMENT)
        self._file.seek(offset)
        length = 0
        for part in [data] if isinstance(data, bytes) else data:  # bytes, or arrays (rnnx.lazy.chunks)
            part = part if isinstance(part, bytes) else memoryview(part).cast("B") if part.size else b""
            self._file.write(part)
            length += len(part)
            progress.wrote(len(part), name)
            del part
        self._end = offset + length
        self.spans[name] = (offset, length)
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", self.location), ("offset", str(offset)), ("length", str(length))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value

    @property
    def model_name(self) -> str:
        """The model file's final name (what `location` is named after)."""
        return self.location.removesuffix(".data")

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    # --- writing the model -----------------------------------------------------------
    def finish(self, model: onnx.ModelProto, model_path: Path, external: bool | None = None,
               limit: int = PROTOBUF_LIMIT, check: bool = True) -> bool:
        """Check `model` and write it to `model_path`; returns True when the weights stay in the scratch
        file as external data (the caller renames it beside the model), False when they went inline (the
        scratch file is then removed; also with external data asked for when no tensor reaches
        INLINE_BYTES, as onnx.save does)."""
        _drop_unused(model, self)
        if check:
            check_skeleton(model)
        if external is None:
            external = inline_size(model, self) > limit
        if external and self.spans:
            self._write_pending(model)
            self.close()
            with open(model_path, "wb") as out:
                out.write(model.SerializeToString())
            progress.wrote(0, self.model_name)  # the weights were counted as they went to the data file
            return True
        self.close()
        if inline_size(model, self) > PROTOBUF_LIMIT:
            raise UnsupportedError(f"The ONNX model {model_path.name} would exceed protobuf's 2 GiB limit as one "
                                   f"file; write it with external data (--external-data).")
        with open(self.scratch, "rb") as data, open(model_path, "wb") as out:
            _stream_inline(model, self, data, out)
        progress.wrote(inline_size(model, self) - sum(n for _, n in self.spans.values()), self.model_name)
        self.scratch.unlink()
        return False


    def _write_pending(self, model: onnx.ModelProto) -> None:
        """Compute the pending tensors into the data file, in the model's order, and point the model at them."""
        for tensor in model.graph.initializer:
            if tensor.name in self.pending:
                array = self.pending.pop(tensor.name)
                self._append(tensor.name, chunks(array, np.dtype(array.dtype).newbyteorder("<")), tensor)

    def pending_chunks(self, name: str):
        """The bytes of pending tensor `name`, computed now, as arrays to write one after another."""
        array = self.pending[name]
        for part in chunks(array, np.dtype(array.dtype).newbyteorder("<")):
            progress.wrote(part.nbytes, name)
            yield part


def check_skeleton(model: onnx.ModelProto) -> None:
    """onnx.checker (full) on `model` with its stored tensors as typed graph inputs instead of data."""
    skeleton = onnx.ModelProto()
    skeleton.CopyFrom(model)
    graph = skeleton.graph
    inputs = {i.name for i in graph.input}
    kept = [t for t in graph.initializer if t.data_location != TensorProto.EXTERNAL]
    stand_ins = [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in graph.initializer
                 if t.data_location == TensorProto.EXTERNAL and t.name not in inputs]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    graph.input.extend(stand_ins)
    try:
        onnx.checker.check_model(skeleton, full_check=True)
    except Exception as exc:  # a bug in rnnx, never the user's doing: say which check failed
        raise RuntimeError(f"rnnx built an ONNX model that fails onnx.checker: {exc}") from exc


def _drop_unused(model: onnx.ModelProto, store: WeightStore) -> None:
    """Forget spans of tensors the model no longer holds (a converter's unused constant)."""
    held = {t.name for t in model.graph.initializer}
    for name in [n for n in store.spans if n not in held]:
        del store.spans[name]
        store.pending.pop(name, None)


# --- the streamed inline writer ---------------------------------------------------------
def _key(field: int) -> bytes:
    return _varint(field << 3 | 2)  # wire type 2: length-delimited


def _split(message: bytes, field: int) -> tuple[bytes, bytes]:
    """The serialized fields of `message` numbered below `field`, and those above it (it holds none of
    `field` itself)."""
    pos = 0
    while pos < len(message):
        start = pos
        tag, pos = _read_varint(message, pos)
        number, wire = tag >> 3, tag & 7
        if number > field:
            return message[:start], message[start:]
        if wire == 0:
            _, pos = _read_varint(message, pos)
        elif wire == 1:
            pos += 8
        elif wire == 2:
            length, pos = _read_varint(message, pos)
            pos += length
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"unexpected protobuf wire type {wire}")
    return message, b""


def _inline_tensor(tensor: TensorProto, store: WeightStore) -> tuple[bytes, bytes, tuple[int, int] | None]:
    """(serialized fields before raw_data, after it, span of its data in the store or None)."""
    span = store.spans.get(tensor.name) if tensor.data_location == TensorProto.EXTERNAL else None
    if span is None:
        return tensor.SerializeToString(), b"", None
    plain = TensorProto()
    plain.CopyFrom(tensor)
    plain.ClearField("external_data")
    plain.ClearField("data_location")
    before, after = _split(plain.SerializeToString(), TENSOR_RAW_DATA)
    return before + _key(TENSOR_RAW_DATA) + _varint(span[1]), after, span


def _layout(model: onnx.ModelProto, store: WeightStore):
    graph = onnx.GraphProto()
    graph.CopyFrom(model.graph)
    graph.ClearField("initializer")
    graph_low, graph_high = _split(graph.SerializeToString(), GRAPH_INITIALIZER)
    tensors = []
    for tensor in model.graph.initializer:
        before, after, span = _inline_tensor(tensor, store)
        size = len(before) + (span[1] if span else 0) + len(after)
        tensors.append((_key(GRAPH_INITIALIZER) + _varint(size) + before, span, after, size, tensor.name))
    graph_size = len(graph_low) + len(graph_high) + sum(
        len(_key(GRAPH_INITIALIZER)) + len(_varint(size)) + size for *_, size, _ in tensors)
    shell = onnx.ModelProto()
    shell.CopyFrom(model)
    shell.ClearField("graph")
    model_low, model_high = _split(shell.SerializeToString(), MODEL_GRAPH)
    head = model_low + _key(MODEL_GRAPH) + _varint(graph_size) + graph_low
    return head, tensors, graph_high + model_high, len(head) + graph_size - len(graph_low) + len(model_high)


def inline_size(model: onnx.ModelProto, store: WeightStore) -> int:
    """The size of `model` serialized as one file with every stored tensor inline."""
    return _layout(model, store)[3]


def _stream_inline(model: onnx.ModelProto, store: WeightStore, data, out) -> None:
    head, tensors, tail, _ = _layout(model, store)
    out.write(head)
    for prefix, span, after, _, name in tensors:
        out.write(prefix)
        if span is not None and span[0] is None:  # a lazy tensor, computed now
            written = 0
            for part in store.pending_chunks(name):
                out.write(memoryview(part).cast("B") if part.size else b"")
                written += part.nbytes
            part = None  # the last part is a view of the whole tensor: let it go before the next is computed
            if written != span[1]:
                raise ValueError(f"{name}: computed {written} bytes, its shape says {span[1]}")
        elif span is not None:
            data.seek(span[0])
            _copy(data, out, span[1])
        out.write(after)
    out.write(tail)


def _copy(src, dst, length: int) -> None:
    """Copy `length` bytes from src's position to dst's, in the kernel where the system can."""
    if hasattr(os, "copy_file_range"):
        dst.flush()
        start, at = src.tell(), dst.tell()
        done = 0
        try:
            while done < length:
                moved = os.copy_file_range(src.fileno(), dst.fileno(), length - done, start + done, at + done)
                if moved <= 0:
                    break
                done += moved
        except OSError:
            done = 0  # a file system that cannot: copy through Python below
        dst.seek(at + done)
        src.seek(start + done)
        length -= done
    while length:
        chunk = src.read(min(length, COPY_CHUNK))
        if not chunk:
            raise OSError("the scratch weights file ended early")
        dst.write(chunk)
        length -= len(chunk)


__all__ = ["WeightStore", "check_skeleton", "data_file_name", "inline_size", "INLINE_BYTES", "PROTOBUF_LIMIT"]


def write_model(path: Path, build, external: bool | None = None, limit: int = PROTOBUF_LIMIT) -> list[str]:
    """Write the model `build(store)` returns ((model, notes)) to `path`, atomically with its data file.

    external: None = external data only when the model would not fit in one protobuf (over `limit`
    bytes), True = always, False = never (refused over 2 GiB)."""
    from ...io import atomic_outputs

    path = Path(path)
    data_path = path.with_name(data_file_name(path))
    with atomic_outputs(data_path, path) as (tmp_data, tmp_model):
        store = WeightStore(tmp_data, data_path.name)
        try:
            model, notes = build(store)
            kept = store.finish(model, tmp_model, external=external, limit=limit)
        finally:
            store.close()
    notes = list(notes)
    if external and not kept:
        notes.append(f"no tensor is {INLINE_BYTES} bytes or more, so none was moved out of {path.name} "
                     f"(ONNX keeps small tensors in the model)")
    if kept:
        why = "as asked" if external else "since the model is larger than one protobuf holds (2 GiB)"
        notes.append(f"the weights are in {data_path.name} beside {path.name} (ONNX external data, {why}); "
                     f"keep the two files together")
    return notes
