"""The few TensorFlow protobuf messages rnnx decodes, read with a small wire-format decoder.

Each message is a `Message` schema: field number -> `Field(name, kind, repeated, message)`.
Fields not in a schema are skipped without being decoded (a 1 MB `saved_model.pb` is mostly
function graphs rnnx never looks at). Length prefixes are checked against the bytes that
are there before anything is sliced, so a damaged message raises `ProtoError`, never
allocates what it merely claims. tests/formats/tf_format/test_protos.py checks every field
number here against TensorFlow's own compiled descriptors.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class ProtoError(ValueError):
    """The bytes are not a well-formed message of the expected type."""


@dataclass(frozen=True)
class Field:
    name: str
    kind: str  # varint | fixed32 | fixed64 | bytes | string | message
    repeated: bool = False
    message: "Message | None" = None


@dataclass
class Message:
    name: str  # the TensorFlow message name, e.g. "tensorflow.BundleEntryProto"
    fields: dict[int, Field] = field(default_factory=dict)


def read_varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    end = len(data)
    while True:
        if pos >= end:
            raise ProtoError("a varint runs past the end of the data")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ProtoError("a varint is longer than 10 bytes")


def encode_varint(value: int) -> bytes:
    """The protobuf varint encoding of a non-negative `value`."""
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if not value:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def decode(data: bytes | memoryview, schema: Message) -> dict:
    """The fields of `schema` found in `data`: repeated fields as lists, absent ones left out."""
    data = memoryview(data)
    out: dict = {}
    pos, end = 0, len(data)
    while pos < end:
        tag, pos = read_varint(data, pos)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise ProtoError(f"field number 0 in a {schema.name}")
        if wire == 0:
            value, pos = read_varint(data, pos)
        elif wire == 1:
            if pos + 8 > end:
                raise ProtoError(f"a fixed64 field runs past the end of a {schema.name}")
            value, pos = int.from_bytes(data[pos:pos + 8], "little"), pos + 8
        elif wire == 5:
            if pos + 4 > end:
                raise ProtoError(f"a fixed32 field runs past the end of a {schema.name}")
            value, pos = int.from_bytes(data[pos:pos + 4], "little"), pos + 4
        elif wire == 2:
            length, pos = read_varint(data, pos)
            if pos + length > end:
                raise ProtoError(f"field {number} of a {schema.name} claims {length} bytes, more than remain")
            value, pos = data[pos:pos + length], pos + length
        else:
            raise ProtoError(f"wire type {wire} (groups or garbage) in a {schema.name}")
        spec = schema.fields.get(number)
        if spec is None:
            continue
        value = _convert(value, wire, spec, schema)
        if spec.repeated:
            if isinstance(value, list):  # packed repeated scalars
                out.setdefault(spec.name, []).extend(value)
            else:
                out.setdefault(spec.name, []).append(value)
        else:
            out[spec.name] = value
    return out


def _convert(value, wire: int, spec: Field, schema: Message):
    want = {"varint": 0, "fixed32": 5, "fixed64": 1}.get(spec.kind, 2)
    if wire != want:
        if wire == 2 and spec.repeated and spec.kind == "varint":
            return _packed_varints(value)
        raise ProtoError(f"field {spec.name!r} of a {schema.name} has wire type {wire}, expected {want}")
    if spec.kind == "message":
        return decode(value, spec.message)
    if spec.kind == "string":
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise ProtoError(f"field {spec.name!r} of a {schema.name} is not UTF-8 text") from None
    if spec.kind == "bytes":
        return bytes(value)
    return value


def _packed_varints(value) -> list[int]:
    out, pos = [], 0
    while pos < len(value):
        number, pos = read_varint(value, pos)
        out.append(number)
    return out


def _message(name: str, *fields: tuple) -> Message:
    return Message(name, {number: Field(*rest) for number, *rest in fields})


# ------------------------------------------------------------------ tensor bundle (tensor_bundle.proto)

TENSOR_SHAPE = _message("tensorflow.TensorShapeProto")
TENSOR_SHAPE_DIM = _message("tensorflow.TensorShapeProto.Dim", (1, "size", "varint"), (2, "name", "string"))
TENSOR_SHAPE.fields.update({2: Field("dim", "message", True, TENSOR_SHAPE_DIM), 3: Field("unknown_rank", "varint")})
TENSOR_SLICE_EXTENT = _message("tensorflow.TensorSliceProto.Extent", (1, "start", "varint"), (2, "length", "varint"))
TENSOR_SLICE = _message("tensorflow.TensorSliceProto", (1, "extent", "message", True, TENSOR_SLICE_EXTENT))
VERSION_DEF = _message("tensorflow.VersionDef", (1, "producer", "varint"), (2, "min_consumer", "varint"))
BUNDLE_HEADER = _message("tensorflow.BundleHeaderProto", (1, "num_shards", "varint"), (2, "endianness", "varint"),
                         (3, "version", "message", False, VERSION_DEF))
BUNDLE_ENTRY = _message("tensorflow.BundleEntryProto", (1, "dtype", "varint"),
                        (2, "shape", "message", False, TENSOR_SHAPE), (3, "shard_id", "varint"),
                        (4, "offset", "varint"), (5, "size", "varint"), (6, "crc32c", "fixed32"),
                        (7, "slices", "message", True, TENSOR_SLICE))

# ------------------------------------------------------------------ object graph (trackable_object_graph.proto)

OBJECT_REFERENCE = _message("tensorflow.TrackableObjectGraph.TrackableObject.ObjectReference",
                            (1, "node_id", "varint"), (2, "local_name", "string"))
SERIALIZED_TENSOR = _message("tensorflow.TrackableObjectGraph.TrackableObject.SerializedTensor",
                             (1, "name", "string"), (2, "full_name", "string"), (3, "checkpoint_key", "string"))
SLOT_VARIABLE_REFERENCE = _message(
    "tensorflow.TrackableObjectGraph.TrackableObject.SlotVariableReference",
    (1, "original_variable_node_id", "varint"), (2, "slot_name", "string"), (3, "slot_variable_node_id", "varint"))
TRACKABLE_OBJECT = _message("tensorflow.TrackableObjectGraph.TrackableObject",
                            (1, "children", "message", True, OBJECT_REFERENCE),
                            (2, "attributes", "message", True, SERIALIZED_TENSOR),
                            (3, "slot_variables", "message", True, SLOT_VARIABLE_REFERENCE))
TRACKABLE_OBJECT_GRAPH = _message("tensorflow.TrackableObjectGraph", (1, "nodes", "message", True, TRACKABLE_OBJECT))

# ------------------------------------------------------------------ SavedModel (saved_model.proto, saved_object_graph.proto)

SAVED_USER_OBJECT = _message("tensorflow.SavedUserObject", (1, "identifier", "string"),
                             (2, "version", "message", False, VERSION_DEF), (3, "metadata", "string"))
SAVED_VARIABLE = _message("tensorflow.SavedVariable", (1, "dtype", "varint"),
                          (2, "shape", "message", False, TENSOR_SHAPE), (3, "trainable", "varint"),
                          (6, "name", "string"))
SAVED_OBJECT = _message("tensorflow.SavedObject", (1, "children", "message", True, OBJECT_REFERENCE),
                        (4, "user_object", "message", False, SAVED_USER_OBJECT),
                        (7, "variable", "message", False, SAVED_VARIABLE))
SAVED_OBJECT_GRAPH = _message("tensorflow.SavedObjectGraph", (1, "nodes", "message", True, SAVED_OBJECT))
META_GRAPH_DEF = _message("tensorflow.MetaGraphDef", (7, "object_graph_def", "message", False, SAVED_OBJECT_GRAPH))
SAVED_MODEL = _message("tensorflow.SavedModel", (1, "saved_model_schema_version", "varint"),
                       (2, "meta_graphs", "message", True, META_GRAPH_DEF))

# ------------------------------------------------------------------ Keras metadata (keras/protobuf/saved_metadata.proto)

KERAS_SAVED_OBJECT = _message("third_party.tensorflow.python.keras.protobuf.SavedObject",
                              (2, "node_id", "varint"), (3, "node_path", "string"), (4, "identifier", "string"),
                              (5, "metadata", "string"), (6, "version", "message", False, VERSION_DEF))
KERAS_SAVED_METADATA = _message("third_party.tensorflow.python.keras.protobuf.SavedMetadata",
                                (1, "nodes", "message", True, KERAS_SAVED_OBJECT))

# TensorFlow's DataType enum (types.proto): the dtypes a bundle entry may hold that numpy reads.
DT_FLOAT, DT_DOUBLE, DT_INT32, DT_UINT8, DT_INT16, DT_INT8, DT_STRING = 1, 2, 3, 4, 5, 6, 7
DT_INT64, DT_BOOL, DT_BFLOAT16, DT_UINT16, DT_HALF, DT_UINT32, DT_UINT64 = 9, 10, 14, 17, 19, 22, 23
DTYPE_NAMES = {1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 7: "string",
               9: "int64", 10: "bool", 14: "bfloat16", 17: "uint16", 19: "float16", 22: "uint32", 23: "uint64"}
