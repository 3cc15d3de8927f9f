"""The field numbers and kinds rnnx decodes equal those of TensorFlow's own compiled descriptors,
and rnnx's decoder reads what TensorFlow's serializer writes."""

import pytest

from rnnx.formats.tf_format import protos

# protobuf's FieldDescriptor.type -> the kind rnnx's schema must give that field
KINDS = {1: "fixed64", 3: "varint", 4: "varint", 5: "varint", 8: "varint", 13: "varint", 14: "varint",
         17: "varint", 18: "varint", 7: "fixed32", 6: "fixed64", 9: "string", 12: "bytes", 11: "message"}


def tensorflow_messages():
    from tensorflow.core.framework import tensor_shape_pb2, tensor_slice_pb2, versions_pb2
    from tensorflow.core.protobuf import (saved_model_pb2, saved_object_graph_pb2, tensor_bundle_pb2,
                                          trackable_object_graph_pb2)
    from tensorflow.core.protobuf import meta_graph_pb2
    from tf_keras.protobuf import saved_metadata_pb2

    trackable = trackable_object_graph_pb2.TrackableObjectGraph.TrackableObject
    return [
        (protos.TENSOR_SHAPE, tensor_shape_pb2.TensorShapeProto),
        (protos.TENSOR_SHAPE_DIM, tensor_shape_pb2.TensorShapeProto.Dim),
        (protos.TENSOR_SLICE, tensor_slice_pb2.TensorSliceProto),
        (protos.TENSOR_SLICE_EXTENT, tensor_slice_pb2.TensorSliceProto.Extent),
        (protos.VERSION_DEF, versions_pb2.VersionDef),
        (protos.BUNDLE_HEADER, tensor_bundle_pb2.BundleHeaderProto),
        (protos.BUNDLE_ENTRY, tensor_bundle_pb2.BundleEntryProto),
        (protos.TRACKABLE_OBJECT_GRAPH, trackable_object_graph_pb2.TrackableObjectGraph),
        (protos.TRACKABLE_OBJECT, trackable),
        (protos.OBJECT_REFERENCE, trackable.ObjectReference),
        (protos.SERIALIZED_TENSOR, trackable.SerializedTensor),
        (protos.SLOT_VARIABLE_REFERENCE, trackable.SlotVariableReference),
        (protos.SAVED_MODEL, saved_model_pb2.SavedModel),
        (protos.META_GRAPH_DEF, meta_graph_pb2.MetaGraphDef),
        (protos.SAVED_OBJECT_GRAPH, saved_object_graph_pb2.SavedObjectGraph),
        (protos.SAVED_OBJECT, saved_object_graph_pb2.SavedObject),
        (protos.SAVED_USER_OBJECT, saved_object_graph_pb2.SavedUserObject),
        (protos.SAVED_VARIABLE, saved_object_graph_pb2.SavedVariable),
        (protos.KERAS_SAVED_METADATA, saved_metadata_pb2.SavedMetadata),
        (protos.KERAS_SAVED_OBJECT, saved_metadata_pb2.SavedObject),
    ]


def test_every_field_matches_tensorflows_descriptor():
    checked = 0
    for schema, message in tensorflow_messages():
        descriptor = message.DESCRIPTOR
        assert descriptor.full_name.rsplit(".", 1)[-1] == schema.name.rsplit(".", 1)[-1]
        for number, field in schema.fields.items():
            tf_field = descriptor.fields_by_number.get(number)
            assert tf_field is not None, f"{schema.name} has no field {number}"
            assert tf_field.name == field.name, (schema.name, number, tf_field.name, field.name)
            assert KINDS[tf_field.type] == field.kind, (schema.name, field.name, tf_field.type)
            repeated = tf_field.is_repeated
            assert repeated == field.repeated, (schema.name, field.name)
            if field.message is not None:
                assert tf_field.message_type.name == field.message.name.rsplit(".", 1)[-1]
            checked += 1
    assert checked >= 45


def test_decoder_reads_what_tensorflow_serializes():
    from tensorflow.core.protobuf import tensor_bundle_pb2

    entry = tensor_bundle_pb2.BundleEntryProto(dtype=1, shard_id=2, offset=300, size=4 * 6, crc32c=0xDEADBEEF)
    entry.shape.dim.add(size=2)
    entry.shape.dim.add(size=3, name="units")
    decoded = protos.decode(entry.SerializeToString(), protos.BUNDLE_ENTRY)
    assert decoded == {"dtype": 1, "shard_id": 2, "offset": 300, "size": 24, "crc32c": 0xDEADBEEF,
                       "shape": {"dim": [{"size": 2}, {"size": 3, "name": "units"}]}}


@pytest.mark.parametrize("damaged", [b"\x0a\x7f", b"\x08", b"\x0b\x00", b"\x00\x01", b"\x15\x01\x02"])
def test_damaged_messages_raise_proto_error(damaged):
    with pytest.raises(protos.ProtoError):
        protos.decode(damaged, protos.BUNDLE_ENTRY)
