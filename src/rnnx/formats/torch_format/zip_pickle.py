"""PyTorch's zip checkpoint format (torch.save since 1.6), read with numpy alone.

A torch zip holds `<archive>/data.pkl` (the pickled object tree), one member
`<archive>/data/<key>` per storage (raw bytes), and `<archive>/byteorder`. The pickle
is read by a restricted Unpickler: `find_class` hands out only small stand-ins for the
names torch.save writes for plain tensors and containers (the rebuild functions, storage
classes, dtypes, OrderedDict, ...), so no code from the file ever runs; any other name
is refused with a FormatError. Tensors come back with torch's dtype (bfloat16, which numpy
lacks, as `BFloat16Array`; dtypes numpy cannot hold and quantized / sparse tensors as
`UnreadableTensor`), byte-swapped when the file says it is big-endian.

`load_state(path, lazy=True)` reads only the pickle: each tensor is a LazyArray that reads the
bytes its view spans from the file when it is used (zip_data); tensors viewing all of a storage
(tied weights) share one read while any of them is held. Every size the file claims (members in
the central directory and local headers, storages against their members, each tensor's view
against its storage) is checked while the pickle is read, before anything is allocated; what
only the data can show (a member truncated or damaged since, its CRC) when it is read. torch is
never imported here.
"""

from __future__ import annotations

import io
import math
import pickle
import re
import sys
import weakref
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ...errors import FormatError
from ...io import safe_member_name
from ...lazy import LazyArray
from . import zip_data

# torch storage class -> torch dtype name; dtype name -> numpy dtype (None: numpy has none)
STORAGE_DTYPES = {
    "DoubleStorage": "float64", "FloatStorage": "float32", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
    "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool",
    "ComplexDoubleStorage": "complex128", "ComplexFloatStorage": "complex64",
    "QInt8Storage": "qint8", "QUInt8Storage": "quint8", "QInt32Storage": "qint32",
    "QUInt4x2Storage": "quint4x2", "QUInt2x4Storage": "quint2x4",
}
NUMPY_DTYPES = {
    "float64": np.float64, "float32": np.float32, "float16": np.float16, "bfloat16": np.uint16,
    "int64": np.int64, "int32": np.int32, "int16": np.int16, "int8": np.int8, "uint8": np.uint8,
    "uint16": np.uint16, "uint32": np.uint32, "uint64": np.uint64, "bool": np.bool_,
    "complex128": np.complex128, "complex64": np.complex64,
}
_OTHER_DTYPES = ("complex32", "float8_e5m2", "float8_e4m3fn", "float8_e5m2fnuz", "float8_e4m3fnuz",
                 "float8_e8m0fnu", "float4_e2m1fn_x2", "qint8", "qint32", "quint8", "quint4x2", "quint2x4",
                 "bits8", "bits16", "bits1x8", "bits2x4", "bits4x2")
_ELEMENT_SIZE = {"complex32": 4, "bits16": 2, "qint32": 4}  # of dtypes numpy lacks; 1 byte otherwise
_MAX_DEFLATE_RATIO = 1032  # deflate cannot expand its input more than this
_STORAGE_KEY = re.compile(r"\w+\Z")


def is_tensor(value) -> bool:
    return isinstance(value, (np.ndarray, LazyArray, BFloat16Array, UnreadableTensor))


def refusal_message(path: Path, name: str = "") -> str:
    what = f" ({name})" if name else ""
    return (f"{path} needs arbitrary pickle code to load{what}, which rnnx refuses to run. If you trust the "
            f"file, load it in PyTorch yourself and save model.state_dict() with torch.save.")


def is_torch_zip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) == b"PK\x03\x04"


def load_state(path: Path, lazy: bool = False) -> object:
    """The object tree torch.save wrote to `path`, tensors as numpy arrays (lazy: as LazyArrays read from
    the file when used); FormatError if unsafe or broken."""
    path = Path(path)
    archive_size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as zf, open(path, "rb") as fh:
            prefix = _archive_prefix(zf, path)
            byteorder = _byteorder(zf, prefix, path, archive_size)
            pickled = _read_member(zf, f"{prefix}/data.pkl", path, archive_size)
            unpickler = _Unpickler(io.BytesIO(pickled), zf, fh, prefix, byteorder, path, archive_size, lazy)
            return unpickler.load()
    except FormatError:
        raise
    except _Refused as exc:
        raise FormatError(refusal_message(path, exc.name)) from None
    except zipfile.BadZipFile as exc:
        raise FormatError(f"{path} looks like a zip archive but cannot be opened ({exc}).") from None
    except Exception as exc:  # a damaged pickle: EOFError, UnpicklingError, TypeError from a bad call...
        raise FormatError(f"{path} is not a readable PyTorch file ({_first_line(exc)}); "
                          f"it may be truncated or not written by torch.save.") from None


# --- the archive -----------------------------------------------------------------------------

def _archive_prefix(zf: zipfile.ZipFile, path: Path) -> str:
    names = zf.namelist()
    for name in names:
        if safe_member_name(name) is None:
            raise FormatError(f"{path} has a member named {name!r} that points outside the archive; "
                              f"torch.save never writes such names, so rnnx does not read the file.")
    pickles = [n[:-len("/data.pkl")] for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if "constants.pkl" in {n.rpartition("/")[2] for n in names}:
        raise FormatError(f"{path} is a TorchScript archive (torch.jit.save), not a torch.save file; "
                          f"save the model's state_dict() with torch.save and convert that.")
    if len(pickles) != 1:
        found = "no" if not pickles else "several"
        raise FormatError(f"{path} is a zip archive with {found} <archive>/data.pkl, so not a file written "
                          f"by torch.save.")
    return pickles[0]


def _byteorder(zf: zipfile.ZipFile, prefix: str, path: Path, archive_size: int) -> str:
    name = f"{prefix}/byteorder"
    if name not in zf.NameToInfo:
        return "little"  # older torch versions write no byteorder member, and little-endian data
    order = _read_member(zf, name, path, archive_size).decode("ascii", "replace").strip()
    if order not in ("little", "big"):
        raise FormatError(f"{path} gives its byte order as {order[:20]!r}; torch.save writes 'little' or 'big'.")
    return order


def _checked_info(zf: zipfile.ZipFile, name: str, path: Path, archive_size: int) -> zipfile.ZipInfo:
    """The member's entry, once its sizes are possible for an archive of `archive_size` bytes."""
    try:
        info = zf.getinfo(name)
    except KeyError:
        raise FormatError(f"{path} has no member {name!r}; the file is incomplete or not written by "
                          f"torch.save.") from None
    plausible = info.compress_size <= archive_size and (
        (info.compress_type == zipfile.ZIP_STORED and info.file_size == info.compress_size)
        or (info.compress_type == zipfile.ZIP_DEFLATED
            and info.file_size <= info.compress_size * _MAX_DEFLATE_RATIO))
    if not plausible:
        raise FormatError(f"{path}: member {name!r} claims {info.file_size} bytes, which an archive of "
                          f"{archive_size} bytes cannot hold; the file is damaged or not written by torch.save.")
    return info


def _read_member(zf: zipfile.ZipFile, name: str, path: Path, archive_size: int) -> bytes:
    return zf.read(_checked_info(zf, name, path, archive_size))


def _locate_storage(zf: zipfile.ZipFile, fh, name: str, nbytes: int, path: Path,
                    archive_size: int) -> zip_data.MemberData:
    """Where the storage member `name` of `nbytes` bytes lies, every size checked; nothing is read."""
    info = _checked_info(zf, name, path, archive_size)
    if info.file_size != nbytes:
        raise FormatError(f"{path}: storage {name!r} should hold {nbytes} bytes but holds {info.file_size}; "
                          f"the file is damaged.")
    return zip_data.locate(fh, info, path, archive_size)


# --- the restricted unpickler ------------------------------------------------------------------

class _Refused(pickle.UnpicklingError):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


class _Frozen:
    """Stand-ins are immutable: pickle's BUILD opcode cannot change them."""
    __slots__ = ()

    def __setstate__(self, state):
        raise pickle.UnpicklingError(f"BUILD of {self!r}")

    def __setattr__(self, name, value):
        raise pickle.UnpicklingError(f"setting {name} of {self!r}")


class BFloat16Array(_Frozen):
    """A bfloat16 tensor (numpy has no bfloat16); `float32` (an array or a LazyArray) holds its values exactly."""
    __slots__ = ("float32",)

    def __init__(self, float32):
        object.__setattr__(self, "float32", float32)

    @property
    def shape(self) -> tuple:
        return self.float32.shape

    def __repr__(self):
        return f"bfloat16 tensor of shape {self.shape}"


class UnreadableTensor(_Frozen):
    """A tensor numpy cannot hold: `kind` says what it is (a float8 tensor, a quantized tensor, ...)."""
    __slots__ = ("kind",)

    def __init__(self, kind: str):
        object.__setattr__(self, "kind", kind)

    def __repr__(self):
        return self.kind


class _DType(_Frozen):
    __slots__ = ("name",)

    def __init__(self, name: str):
        object.__setattr__(self, "name", name)

    @property
    def numpy(self):
        return NUMPY_DTYPES.get(self.name)

    @property
    def itemsize(self) -> int:
        return np.dtype(self.numpy).itemsize if self.numpy is not None else _ELEMENT_SIZE.get(self.name, 1)

    def __repr__(self):
        return f"torch.{self.name}"


class _StorageType(_Frozen):
    """torch.FloatStorage and friends (dtype None: torch.storage.UntypedStorage, bytes)."""
    __slots__ = ("name", "dtype")

    def __init__(self, name: str, dtype: _DType):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "dtype", dtype)

    def __repr__(self):
        return f"torch.{self.name}"


class _Storage(_Frozen):
    """One storage: where its bytes lie, the dtype torch gave it, and its bytes while they are held.

    big_endian: the bytes of an untyped storage (dtype uint8) of a big-endian file, left unswapped.
    swap: the numpy dtype whose items are byte-swapped after reading (a typed storage of a big-endian
    file), else None. keep: the eager reader's storages, read whole once and kept.
    """
    __slots__ = ("member", "nbytes", "dtype", "key", "big_endian", "swap", "keep", "_held", "_checked")

    def __init__(self, member: zip_data.MemberData, dtype: _DType, key: str, big_endian: bool, swap, keep: bool):
        for name, value in (("member", member), ("nbytes", member.size), ("dtype", dtype), ("key", key),
                            ("big_endian", big_endian), ("swap", swap), ("keep", keep), ("_held", None),
                            ("_checked", False)):
            object.__setattr__(self, name, value)

    def byte_range(self, start: int, stop: int) -> np.ndarray:
        """Bytes [start, stop) in native order. All of them are read and shared while a tensor made from
        them is held (a weak reference: tied weights); a range is read alone (the views into one flat
        buffer that CUDA RNN modules save), the first one with the whole member read for its CRC."""
        held = self._held() if isinstance(self._held, weakref.ref) else self._held
        if held is not None:
            return held[start:stop]
        whole = self.keep or (start, stop) == (0, self.nbytes)
        if whole:
            raw = zip_data.read_data(self.member)
            object.__setattr__(self, "_held", raw if self.keep else weakref.ref(raw))
        else:
            raw = zip_data.read_data(self.member, start, stop, check=not self._checked)
        object.__setattr__(self, "_checked", True)
        if self.swap is not None:  # complex values swap each of their two parts; bfloat16 is read as uint16
            raw.view(self.swap).byteswap(inplace=True)
        return raw[start:stop] if whole else raw

    def __repr__(self):
        return f"storage {self.key}"


class _Global(_Frozen):
    """An allowed callable global (the rebuild functions, OrderedDict, ...)."""
    __slots__ = ("name", "function")

    def __init__(self, name: str, function):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "function", function)

    def __call__(self, *args):
        return self.function(*args)

    def __repr__(self):
        return self.name


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, zf, fh, prefix, byteorder, path, archive_size, lazy):
        super().__init__(file, encoding="utf-8")
        self._zf, self._fh, self._prefix, self._byteorder = zf, fh, prefix, byteorder
        self._path, self._archive_size, self._lazy = path, archive_size, lazy
        self._storages: dict[str, _Storage] = {}
        self._globals = _allowed_globals(path, lazy)

    def find_class(self, module, name):
        if module == "__builtin__":  # protocol 2 spells builtins this way
            module = "builtins"
        full = f"{module}.{name}"
        if full in self._globals:
            return self._globals[full]
        raise _Refused(full)

    def persistent_load(self, saved_id):
        if not (isinstance(saved_id, tuple) and len(saved_id) == 5 and saved_id[0] in ("storage", b"storage")):
            raise FormatError(f"{self._path} refers to an external object {saved_id!r:.80} that is not a "
                              f"storage; torch.save writes only storages there.")
        _, storage_type, key, _location, numel = saved_id
        if (not isinstance(storage_type, _StorageType) or not isinstance(key, str)
                or not _STORAGE_KEY.match(key) or type(numel) is not int or numel < 0):
            raise FormatError(f"{self._path} describes a storage as {saved_id!r:.120}, which is not what "
                              f"torch.save writes.")
        dtype = storage_type.dtype or _DType("uint8")
        if key in self._storages:
            storage = self._storages[key]
            if storage.dtype.name != dtype.name:
                raise FormatError(f"{self._path} reads storage {key} as {storage.dtype} and as {dtype}; "
                                  f"torch.save never writes that.")
            return storage
        member = _locate_storage(self._zf, self._fh, f"{self._prefix}/data/{key}", numel * dtype.itemsize,
                                 self._path, self._archive_size)
        big_endian = self._byteorder == "big"
        swap = np.dtype(dtype.numpy) if big_endian and dtype.numpy is not None and dtype.itemsize > 1 else None
        untyped = storage_type.dtype is None
        storage = self._storages[key] = _Storage(member, dtype, key, big_endian and untyped, swap,
                                                 keep=not self._lazy)
        return storage


def _allowed_globals(path: Path, lazy: bool) -> dict[str, _Global | _DType | _StorageType]:
    def rebuild_v2(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
        return _rebuild(path, lazy, storage, offset, size, stride, None, metadata)

    def rebuild_v1(storage, offset, size, stride):
        return _rebuild(path, lazy, storage, offset, size, stride, None, None)

    def rebuild_v3(storage, offset, size, stride, requires_grad, hooks, dtype, metadata=None):
        return _rebuild(path, lazy, storage, offset, size, stride, dtype, metadata)

    def parameter(data, requires_grad=True, hooks=None, state=None):
        return data  # nn.Parameter: the tensor it wraps

    def unreadable(kind):
        return lambda *args: UnreadableTensor(kind)

    def encode(text, encoding="utf-8"):
        if not isinstance(text, str) or encoding != "latin1":
            raise FormatError(f"{path} encodes bytes in a way torch.save does not ({encoding!r:.20}).")
        return text.encode("latin1")

    def plain(make, *kinds):
        def checked(*args):  # only the argument types torch.save writes: no bytearray(10**12)
            if not all(isinstance(a, kinds) for a in args):
                raise FormatError(f"{path} builds a {make.__name__} from {args!r:.80}, which torch.save "
                                  f"never writes.")
            return make(*args)
        return checked

    functions = {
        "torch._utils._rebuild_tensor": rebuild_v1,
        "torch._utils._rebuild_tensor_v2": rebuild_v2,
        "torch._utils._rebuild_tensor_v3": rebuild_v3,
        "torch._utils._rebuild_parameter": parameter,
        "torch._utils._rebuild_parameter_with_state": parameter,
        "torch._utils._rebuild_qtensor": unreadable("a quantized tensor"),
        "torch._utils._rebuild_sparse_tensor": unreadable("a sparse tensor"),
        "torch._utils._rebuild_meta_tensor_no_storage": unreadable("a meta-device tensor"),
        "torch.serialization._get_layout": lambda name: str(name),
        "torch.Size": plain(tuple, list, tuple),
        "torch.device": lambda *args: ":".join(str(a) for a in args),
        "collections.OrderedDict": plain(OrderedDict, list, tuple, dict),
        "_codecs.encode": encode,
        "builtins.set": plain(set, list, tuple),
        "builtins.bytearray": plain(bytearray, bytes, str),
        "builtins.complex": plain(complex, int, float),
    }
    allowed: dict = {name: _Global(name, fn) for name, fn in functions.items()}
    dtypes = {name: _DType(name) for name in [*NUMPY_DTYPES, *_OTHER_DTYPES]}
    allowed.update({f"torch.{name}": dtype for name, dtype in dtypes.items()})
    for cls, dtype_name in STORAGE_DTYPES.items():
        allowed[f"torch.{cls}"] = allowed[f"torch.cuda.{cls}"] = _StorageType(cls, dtypes[dtype_name])
    allowed["torch.storage.UntypedStorage"] = allowed["torch.UntypedStorage"] = _StorageType("UntypedStorage", None)
    for scheme in ("per_tensor_affine", "per_tensor_symmetric", "per_channel_affine", "per_channel_symmetric",
                   "per_channel_affine_float_qparams"):
        allowed[f"torch.{scheme}"] = _DType(scheme)
    return allowed


def _rebuild(path: Path, lazy: bool, storage, offset, size, stride, dtype, metadata):
    """The tensor torch._utils._rebuild_tensor* makes, every index checked against the storage's size first:
    a numpy array, or (lazy) a LazyArray that reads the storage when used."""
    if not isinstance(storage, _Storage):
        raise FormatError(f"{path} builds a tensor from {storage!r:.60}, not from a storage.")
    size, stride = tuple(size), tuple(stride)
    if not (_whole(offset, *size, *stride) and len(size) == len(stride)):
        raise FormatError(f"{path}: a tensor on {storage} has offset {offset!r:.40}, size {size!r:.80} and "
                          f"stride {stride!r:.80}, which are not non-negative whole numbers of one rank.")
    if metadata and not (isinstance(metadata, dict) and set(metadata) <= {"conj", "neg"}):
        raise FormatError(f"{path}: a tensor on {storage} carries metadata {metadata!r:.80} that rnnx "
                          f"does not know.")
    if dtype is not None and not isinstance(dtype, _DType):
        raise FormatError(f"{path}: a tensor on {storage} gives {dtype!r:.40} as its dtype.")
    dtype = dtype or storage.dtype
    if dtype.numpy is None:
        return UnreadableTensor(f"a {dtype.name} tensor")
    if storage.big_endian and dtype.itemsize > 1:
        raise FormatError(f"{path}: a {dtype.name} tensor of this big-endian file lies on a storage of bytes, "
                          f"which rnnx does not byte-swap; save the file on a little-endian machine.")
    if storage.swap is not None and dtype.name != storage.dtype.name:
        raise FormatError(f"{path}: a {dtype.name} tensor of this big-endian file lies on a {storage.dtype.name} "
                          f"storage, which torch.save never writes.")
    if storage.nbytes % dtype.itemsize:
        raise FormatError(f"{path}: {storage} has {storage.nbytes} bytes, not a whole number of "
                          f"{dtype.name} values.")
    numpy_dtype = np.dtype(dtype.numpy)
    length = storage.nbytes // numpy_dtype.itemsize
    count = math.prod(size)
    if count * numpy_dtype.itemsize > sys.maxsize:
        raise FormatError(f"{path}: a tensor on {storage} claims size {list(size)}, more than any memory "
                          f"can hold; the file is damaged.")
    extent = sum((n - 1) * s for n, s in zip(size, stride)) + 1  # values from the first to the last one
    if count and offset + extent > length:
        raise FormatError(f"{path}: a tensor of size {list(size)} (stride {list(stride)}, offset {offset}) "
                          f"reaches past the end of {storage}, which holds {length} values; the file "
                          f"is damaged.")
    bfloat16 = dtype.name == "bfloat16"
    conj, neg = bool(metadata and metadata.get("conj")), bool(metadata and metadata.get("neg"))

    first, stop = (offset, offset + extent) if lazy else (0, length)  # lazy: the bytes the view spans alone

    def load() -> np.ndarray:
        item = numpy_dtype.itemsize
        values = storage.byte_range(first * item, stop * item).view(numpy_dtype) if count else np.empty(0, numpy_dtype)
        array = _strided(values, offset - first, size, stride, count)
        if conj:
            array = np.conj(array)
        if neg:
            array = np.negative(array)
        if bfloat16:  # bfloat16 is the upper half of a float32
            array = (array.astype(np.uint32) << 16).view(np.float32)
        return array

    if lazy and count:
        values = LazyArray(size, np.float32 if bfloat16 else numpy_dtype, load, f"{path.name}:{storage.member.name}")
    else:
        values = load()
    return BFloat16Array(values) if bfloat16 else values


def _strided(values: np.ndarray, offset: int, size: tuple, stride: tuple, count: int) -> np.ndarray:
    if count == 0:
        return np.empty(size, values.dtype)
    if all(s == c for n, s, c in zip(size, stride, _contiguous_strides(size)) if n != 1):
        return values[offset:offset + count].reshape(size)  # shares the storage, as torch's tensors do
    view = np.lib.stride_tricks.as_strided(values[offset:], size, [s * values.itemsize for s in stride],
                                           writeable=False)
    if count > values.size - offset:
        return view  # overlapping (an expanded tensor): copying would allocate more than the file holds
    return view.copy()


def _contiguous_strides(size: tuple) -> tuple:
    strides, step = [], 1
    for n in reversed(size):
        strides.append(step)
        step *= n
    return tuple(reversed(strides))


def _whole(*values) -> bool:
    return all(type(v) is int and v >= 0 for v in values)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
