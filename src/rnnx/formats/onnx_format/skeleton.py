"""The skeleton of an .onnx file: its ModelProto with every large inline tensor left in the file.

onnx.load parses a whole file, copying every tensor's values into memory. `skeleton` walks the
protobuf wire format instead, through the messages that can hold tensors (model -> graph -> node
-> attribute -> tensor; sparse tensors, subgraphs, functions and training graphs likewise) and
copies every other byte as it is. A TensorProto whose values take `threshold` bytes or more, as
raw_data (or, for float32 / float64, as a packed float_data / double_data: the same little-endian
bytes), is rewritten as ONNX external data pointing at the model file itself (location: its own
name; offset and length of those bytes), so that the external-data path serves it: a LazyArray
reading that range when used, after the same bounds checks. The length prefixes of the messages
around a rewritten tensor are re-encoded. Parsing the skeleton gives what parsing the file gives,
but for those tensors. A message shorter than `threshold` cannot hold one: it is copied unread.

Protobuf merges the occurrences of a singular message field, so a tensor is rewritten only where
its bytes are the whole of it: a singular field seen twice in its message is copied as it is.

The file is untrusted: every varint and length is checked against the bytes there before
anything is sliced, and malformed wire data raises ProtoError (what was found, at which byte).
The scanner raises only on what protobuf's own parser refuses too; whatever else is wrong is for
that parser to find in the skeleton, whose bytes it sees exactly as it would have seen them.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass
from pathlib import Path

from ..tf_format.protos import ProtoError, read_varint
from ..tf_format.protos import encode_varint as _varint

__all__ = ["skeleton", "ProtoError", "CHILDREN"]

LEN, VARINT, FIXED64, FIXED32, START_GROUP, END_GROUP = 2, 0, 1, 5, 3, 4
MAX_FIELD = 2**29 - 1
MAX_LENGTH = 2**31 - 1  # protobuf's limit on one field (and one message)
MAX_DEPTH = 100  # protobuf's own nesting limit: deeper messages are left to it, copied as they are

# onnx.proto: message -> {field number: (message it holds, repeated)} for the fields that lead to
# tensors. tests/formats/onnx_format/test_lazy_inline.py checks them against onnx's compiled descriptors.
CHILDREN: dict[str, dict[int, tuple[str, bool]]] = {
    "ModelProto": {7: ("GraphProto", False), 20: ("TrainingInfoProto", True), 25: ("FunctionProto", True)},
    "TrainingInfoProto": {1: ("GraphProto", False), 2: ("GraphProto", False)},
    "FunctionProto": {7: ("NodeProto", True), 11: ("AttributeProto", True)},
    "GraphProto": {1: ("NodeProto", True), 5: ("TensorProto", True), 15: ("SparseTensorProto", True)},
    "NodeProto": {5: ("AttributeProto", True)},
    "AttributeProto": {5: ("TensorProto", False), 6: ("GraphProto", False), 10: ("TensorProto", True),
                       11: ("GraphProto", True), 22: ("SparseTensorProto", False),
                       23: ("SparseTensorProto", True)},
    "SparseTensorProto": {1: ("TensorProto", False), 2: ("TensorProto", False)},
    "TensorProto": {},
}
TENSOR_DATA_TYPE, TENSOR_RAW_DATA, TENSOR_EXTERNAL_DATA, TENSOR_DATA_LOCATION = 2, 9, 13, 14
TENSOR_FLOAT_DATA, TENSOR_DOUBLE_DATA = 4, 10
TENSOR_DATA_FIELDS = {4, 5, 6, 7, 9, 10, 11}  # float, int32, string, int64, raw, double, uint64 values
FLOAT, DOUBLE = 1, 11  # TensorProto.DataType
EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL
# The value fields whose bytes are the tensor's little-endian values, as external data holds them:
# field -> (bytes per value, the data type they must be of: None for raw_data, any). A packed
# float_data of a FLOAT tensor is its raw_data, field for field; int32_data (float16) is varints.
RANGED = {TENSOR_RAW_DATA: (1, None), TENSOR_FLOAT_DATA: (4, FLOAT), TENSOR_DOUBLE_DATA: (8, DOUBLE)}


@dataclass(frozen=True)
class _Field:
    number: int
    wire: int
    start: int  # where its tag begins
    tag_end: int  # where its tag ends (a LEN field's length prefix begins)
    value_start: int  # a LEN field's payload
    end: int


class _Scanner:
    def __init__(self, data, location: str, threshold: int):
        self.data = data  # bytes-like, indexed by absolute file offset
        self.location = location
        self.threshold = threshold

    def varint(self, pos: int) -> tuple[int, int]:
        try:
            return read_varint(self.data, pos)
        except ProtoError as exc:
            raise ProtoError(f"{exc} at byte {pos}") from None

    def fields(self, start: int, end: int):
        """The fields of the message data[start:end], in order, each checked to lie within it."""
        pos = start
        while pos < end:
            field_start = pos
            number, wire, pos = self._tag(pos)
            tag_end = pos
            if wire in (VARINT, FIXED64, FIXED32):
                pos = self._scalar_end(wire, pos)
            elif wire == LEN:
                length, pos = self._length(pos, field_start)
                if length > end - pos:
                    raise ProtoError(f"a field at byte {field_start} claims {length} bytes, more than its "
                                     f"message holds")
                yield _Field(number, wire, field_start, tag_end, pos, pos + length)
                pos += length
                continue
            elif wire == START_GROUP:
                pos = self._skip_group(number, field_start, pos, end)
            else:  # a lone END_GROUP, or wire types 6 and 7, which do not exist
                raise ProtoError(f"wire type {wire} at byte {field_start}")
            if pos > end:
                raise ProtoError(f"a field at byte {field_start} runs past the end of its message")
            yield _Field(number, wire, field_start, tag_end, tag_end, pos)

    def _tag(self, pos: int) -> tuple[int, int, int]:
        """(field number, wire type, position after the tag) of the tag at `pos`, as protobuf accepts one."""
        tag, after = self.varint(pos)
        number, wire = tag >> 3, tag & 7
        if number == 0 or number > MAX_FIELD or after - pos > 5:
            raise ProtoError(f"an invalid field tag at byte {pos}")
        return number, wire, after

    def _scalar_end(self, wire: int, pos: int) -> int:
        """Where the value of a VARINT, FIXED64 or FIXED32 field starting at `pos` ends."""
        if wire == VARINT:
            return self.varint(pos)[1]
        return pos + (8 if wire == FIXED64 else 4)

    def _length(self, pos: int, field_start: int) -> tuple[int, int]:
        """A length prefix at `pos`, as protobuf takes one: at most 5 bytes, under 2 GiB."""
        length, after = self.varint(pos)
        if length > MAX_LENGTH:
            raise ProtoError(f"a field at byte {field_start} claims {length} bytes, more than protobuf allows")
        if after - pos > 5:
            raise ProtoError(f"a field at byte {field_start} has a length prefix of {after - pos} bytes")
        return length, after

    def _skip_group(self, number: int, opened: int, pos: int, end: int) -> int:
        """The position after the END_GROUP that closes the group `number` opened at byte `opened`."""
        open_groups = [number]
        while open_groups:
            if pos >= end:
                raise ProtoError(f"a group opened at byte {opened} is never closed")
            field_start = pos
            inner, wire, pos = self._tag(pos)
            if wire in (VARINT, FIXED64, FIXED32):
                pos = self._scalar_end(wire, pos)
            elif wire == LEN:
                length, pos = self._length(pos, field_start)
                pos += length
            elif wire == START_GROUP:
                if len(open_groups) >= MAX_DEPTH:
                    raise ProtoError(f"groups nested more than {MAX_DEPTH} deep at byte {field_start}")
                open_groups.append(inner)
            elif wire == END_GROUP:
                if open_groups.pop() != inner:
                    raise ProtoError(f"a group closed by the wrong field at byte {field_start}")
            else:
                raise ProtoError(f"wire type {wire} at byte {field_start}")
            if pos > end:
                raise ProtoError(f"a field at byte {field_start} runs past the end of its message")
        return pos

    def message(self, kind: str, start: int, end: int, depth: int) -> bytes | None:
        """The message data[start:end] of type `kind` with its large tensors rewritten, or None when
        nothing in it is (the caller copies it as it is)."""
        if end - start < self.threshold or depth > MAX_DEPTH:
            return None
        if kind == "TensorProto":
            return self.tensor(start, end)
        children = CHILDREN[kind]
        seen: dict[int, int] = {}
        candidates = []
        for f in self.fields(start, end):
            spec = children.get(f.number)
            if spec is None or f.wire != LEN:
                continue
            seen[f.number] = seen.get(f.number, 0) + 1
            if f.end - f.value_start >= self.threshold:
                candidates.append(f)
        pieces, last = [], start
        for f in candidates:
            child, repeated = children[f.number]
            if not repeated and seen[f.number] > 1:
                continue  # protobuf merges the occurrences: no one of them is the whole message
            new = self.message(child, f.value_start, f.end, depth + 1)
            if new is None:
                continue
            pieces += [self.data[last:f.tag_end], _varint(len(new)), new]
            last = f.end
        if not pieces:
            return None
        pieces.append(self.data[last:end])
        return b"".join(pieces)

    def tensor(self, start: int, end: int) -> bytes | None:
        data, data_type = None, 0
        for f in self.fields(start, end):
            if f.number in TENSOR_DATA_FIELDS:
                if data is not None:
                    return None  # values in two fields (or two pieces): left to protobuf and the reader
                data = f
            elif f.number in (TENSOR_EXTERNAL_DATA, TENSOR_DATA_LOCATION):
                return None  # already says where its data is: read as it says
            elif f.number == TENSOR_DATA_TYPE and f.wire == VARINT:
                data_type = self.varint(f.tag_end)[0]  # the last one counts, as in protobuf
        if data is None or data.wire != LEN or data.number not in RANGED:
            return None
        itemsize, wanted_type = RANGED[data.number]
        offset, length = data.value_start, data.end - data.value_start
        if length < self.threshold or length % itemsize or wanted_type not in (None, data_type):
            return None
        return b"".join([self.data[start:data.start], self.data[data.end:end],
                         _entry("location", self.location), _entry("offset", str(offset)),
                         _entry("length", str(length)),
                         _varint(TENSOR_DATA_LOCATION << 3 | VARINT), _varint(EXTERNAL)])


def skeleton(path: Path, location: str, threshold: int) -> bytes:
    """The bytes of the ModelProto in `path` with each raw_data of `threshold` bytes or more replaced by
    external data at `location` (the file's own name, as seen from its folder). ProtoError when the
    wire data is malformed."""
    with open(path, "rb") as fh:
        size = fh.seek(0, 2)
        if size < threshold:
            fh.seek(0)
            return fh.read()
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            scanner = _Scanner(data, location, threshold)
            new = scanner.message("ModelProto", 0, size, 0)
            return data[:] if new is None else new


def _string(number: int, text: str) -> bytes:
    encoded = text.encode("utf-8")
    return _varint(number << 3 | LEN) + _varint(len(encoded)) + encoded


def _entry(key: str, value: str) -> bytes:
    """One TensorProto.external_data entry (a StringStringEntryProto: key = 1, value = 2)."""
    body = _string(1, key) + _string(2, value)
    return _varint(TENSOR_EXTERNAL_DATA << 3 | LEN) + _varint(len(body)) + body
