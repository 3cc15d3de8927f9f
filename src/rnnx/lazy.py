"""Arrays read when used: what readers hand out so that inspecting or refusing reads no tensor data.

A `LazyArray` knows its shape and dtype from the file's header; its values are produced by
`load()` each time they are needed (an HDF5 dataset read by reopening the file by path, a
layout change applied to another lazy array, ...) and not kept once no caller holds them, so
a writer that goes tensor by tensor holds one tensor at a time. Everything numpy does with an array works on it
(`np.asarray`, ufuncs and operators, `np.stack` / `np.split` / ..., attributes such as `.T`,
`.astype`, indexing): each materialises it first. Item assignment (`a[0, 0] = np.nan`,
`a[:4] *= 1.5`) keeps the values from then on, as an array would; a write into the array
`np.asarray(a)` returned lasts while that array is held. Code that uses one array many times
should take `np.asarray(x)` once.
"""

from __future__ import annotations

import math
import threading
import weakref
from contextlib import contextmanager
from typing import Callable

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin

from . import progress

_scope = threading.local()  # .kept: what `read_once` holds while its block runs


class LazyArray(NDArrayOperatorsMixin):
    __slots__ = ("shape", "dtype", "_load", "source", "_last", "_reads_file", "origin", "_written", "parts")

    def __init__(self, shape, dtype, load: Callable[[], np.ndarray], source: str = "", reads_file: bool = True,
                 origin: tuple | None = None):
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        self._load = load
        self.source = source
        self._reads_file = reads_file  # False for values computed from other lazy arrays (progress counts reads)
        self.origin = origin  # (layout tag, the lazy array this one is computed from): see `undo`
        self._written = None  # the values, kept from the first item assignment on
        self._last = None  # a weak reference to the values last read, while someone still holds them
        self.parts = None  # see `joined`

    # --- what is known without reading ---------------------------------------------
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def itemsize(self) -> int:
        return self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of unsized object")
        return self.shape[0]

    def __repr__(self) -> str:
        return f"LazyArray(shape={self.shape}, dtype={self.dtype}{', ' + self.source if self.source else ''})"

    # --- reading -------------------------------------------------------------------
    def load(self) -> np.ndarray:
        """The values: the array handed out last if a caller still holds it (as a numpy field would be
        shared), else freshly read. Nothing is kept alive here, so memory follows what callers hold."""
        if self._written is not None:
            return self._written
        held = self._last() if self._last is not None else None
        if held is not None:
            return held
        array = np.asarray(self._load())
        if array.shape != self.shape or array.dtype != self.dtype:
            raise ValueError(f"{self.source or 'a lazy array'} read as {array.shape} {array.dtype}, its header "
                             f"said {self.shape} {self.dtype}")
        self._last = weakref.ref(array)
        if self._reads_file:
            progress.read(array.nbytes, self.source)
            kept = getattr(_scope, "kept", None)
            if kept is not None:
                kept.append(array)
        return array

    def __array__(self, dtype=None, copy=None):
        array = self.load()
        if dtype is not None:
            return array.astype(dtype, copy=bool(copy))
        return array.copy() if copy else array  # np.array(a) owns its values (a mapped file's are read-only)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        inputs = tuple(materialised(x) for x in inputs)
        if "out" in kwargs:
            kwargs["out"] = tuple(materialised(x) for x in kwargs["out"])
        return getattr(ufunc, method)(*inputs, **kwargs)

    def __array_function__(self, func, types, args, kwargs):
        return func(*materialised(args), **materialised(kwargs))

    def __getitem__(self, key):
        return self.load()[key]

    def __setitem__(self, key, value):  # `a[k] = v`, `a[:4] *= 1.5`: from now on the array holds its values
        values = self.load()
        if not values.flags.writeable:  # a read-only view of a mapped file
            values = values.copy()
        values[key] = value
        self._written = values
        self.origin = self.parts = None  # no longer what it was computed from

    def __iter__(self):
        return iter(self.load())

    def __getattr__(self, name):  # .T, .astype, .reshape, .tobytes, ... of the loaded array
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.load(), name)

    def __reduce__(self):  # pickling or deep-copying keeps the values, not the way to read them
        return (np.asarray, (self.load(),))

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self.load().copy()


def materialised(value):
    """`value` with every LazyArray in it (also inside lists, tuples and dicts) read."""
    if isinstance(value, LazyArray):
        return value.load()
    if isinstance(value, (list, tuple)):
        return type(value)(materialised(v) for v in value)
    if isinstance(value, dict):
        return {k: materialised(v) for k, v in value.items()}
    return value


@contextmanager
def read_once():
    """Inside the block every tensor read from a file stays held until the block ends, so lazy arrays
    computed from the same stored tensor (the two halves of one stored bias) read it once. It holds
    everything read inside: use it for small tensors, or for one layer that is needed whole anyway."""
    if getattr(_scope, "kept", None) is not None:  # an outer block already holds what is read
        yield
        return
    _scope.kept = []
    try:
        yield
    finally:
        _scope.kept = None


def derived(sources, shape, dtype, compute: Callable[..., np.ndarray], label: str = "", layout=None,
            together: bool = False):
    """`compute(*values of sources)` (one source, or a tuple of them; None stays None) as a LazyArray of
    `shape` and `dtype` when a source is lazy, else computed now. `layout` names the change `compute`
    makes to a single source, so that a writer making the inverse change can take the source instead
    (`undo`): no double transposes between files that share a layout. `together`: the sources are read
    inside one `read_once` block (small sources that may share a stored tensor)."""
    items = sources if isinstance(sources, tuple) else (sources,)
    lazy = [s for s in items if isinstance(s, LazyArray)]
    if not lazy:
        return compute(*items)
    origin = (layout, items[0]) if layout is not None and len(items) == 1 else None

    def load():
        if not together:
            return compute(*materialised(items))
        with read_once():
            return compute(*materialised(items))

    return LazyArray(shape, dtype, load, label or lazy[0].source, reads_file=False, origin=origin)


def joined(sources, shape, dtype, parts: Callable[..., list], label: str = ""):
    """The array whose C-order values are those of the arrays `parts(*values of sources)` returns, one after
    another (gate blocks put in another order, directions stacked), reshaped to `shape`: a LazyArray when a
    source is lazy, which streaming writers write part by part (`chunks`) without joining them, else
    joined now."""
    items = sources if isinstance(sources, tuple) else (sources,)

    def join(*values):
        return np.concatenate([np.ravel(p) for p in parts(*values)]).astype(dtype, copy=False).reshape(shape)

    array = derived(sources, shape, dtype, join, label)
    if isinstance(array, LazyArray):
        array.parts = lambda: parts(*materialised(items))
    return array


def chunks(array, dtype=None):
    """`array`'s values as contiguous arrays (of `dtype`, default its own) whose bytes, one after another,
    are the whole array's C-order bytes: the parts of a `joined` array as they are, else the array itself."""
    dtype = np.dtype(array.dtype if dtype is None else dtype)
    if isinstance(array, LazyArray) and array.parts is not None:
        for part in array.parts():
            yield np.ascontiguousarray(part, dtype=dtype)
    else:
        yield np.ascontiguousarray(np.asarray(array), dtype=dtype)


def undo(value, layout):
    """The lazy array `value` was computed from by the change named `layout`, or None."""
    if isinstance(value, LazyArray) and value.origin is not None and value.origin[0] == layout:
        return value.origin[1]
    return None


def is_lazy(value) -> bool:
    return isinstance(value, LazyArray)


def held(layer):
    """`layer` (a RecurrentLayer) with its lazy tensors read once, for code that uses them many times
    (verification runs the reference several times per layer); the same layer when none is lazy."""
    import dataclasses

    if not any(isinstance(t, LazyArray) for d in layer.directions for t in d.tensors().values()):
        return layer
    directions = [dataclasses.replace(d, **{k: np.asarray(v) for k, v in d.tensors().items()})
                  for d in layer.directions]
    return dataclasses.replace(layer, directions=directions)


def read_all(bundle):
    """A copy of `bundle` whose every tensor is read into a numpy array of its own (for code that wants the
    whole model in memory, and for comparing lazy with eager results)."""
    import dataclasses

    from .canonical import Bundle, OpaqueLayer

    items = []
    for item in bundle.items:
        if isinstance(item, OpaqueLayer):
            items.append(dataclasses.replace(item, weights=[(n, np.array(w)) for n, w in item.weights]))
        else:
            directions = [dataclasses.replace(d, **{k: np.array(v) for k, v in d.tensors().items()})
                          for d in item.directions]
            items.append(dataclasses.replace(item, directions=directions))
    return Bundle(items, dict(bundle.source))


def lazy_bytes(bundle) -> int:
    """Bytes of the bundle's tensors still to be read (its lazy arrays)."""
    arrays = [a for item in bundle.items for a in
              ([t for d in item.directions for t in d.tensors().values()] if hasattr(item, "directions")
               else [w for _, w in item.weights])]
    return sum(a.nbytes for a in arrays if isinstance(a, LazyArray))


__all__ = ["LazyArray", "derived", "joined", "chunks", "read_once", "undo", "materialised", "held", "read_all", "is_lazy",
           "lazy_bytes"]
