"""rnnx.lazy.LazyArray: shape and dtype without reading, and numpy behaviour for every use once read."""

import copy
import pickle

import numpy as np
import pytest

from rnnx.lazy import LazyArray, derived


def _lazy(values: np.ndarray, reads: list) -> LazyArray:
    def load():
        reads.append(1)
        return values.copy()

    return LazyArray(values.shape, values.dtype, load, "test")


def test_header_facts_need_no_read():
    reads = []
    a = _lazy(np.arange(12, dtype=np.float32).reshape(3, 4), reads)
    assert (a.shape, a.dtype, a.ndim, a.size, a.nbytes, len(a)) == ((3, 4), np.float32, 2, 12, 48, 3)
    assert "LazyArray" in repr(a) and reads == []


def test_behaves_like_the_array_it_reads():
    values = np.arange(12, dtype=np.float32).reshape(3, 4)
    a = _lazy(values, [])
    assert np.array_equal(np.asarray(a), values)
    assert np.array_equal(a + 1, values + 1) and np.array_equal(-a, -values) and np.array_equal(a * a, values ** 2)
    assert np.array_equal(a.T, values.T) and np.array_equal(a[1], values[1]) and a.astype(np.float64).dtype == np.float64
    assert [np.array_equal(x, y) for x, y in zip(np.split(a, 3), np.split(values, 3))] == [True] * 3
    assert np.array_equal(np.stack([a, a]), np.stack([values, values]))
    assert np.array_equal(np.concatenate([a, values]), np.concatenate([values, values]))
    assert np.any(a) and not np.any(a > 100) and float(np.max(a)) == 11.0
    assert np.array_equal(np.ascontiguousarray(a), values) and np.array(a, copy=True).flags.owndata
    assert np.array_equal(pickle.loads(pickle.dumps(a)), values) and np.array_equal(copy.deepcopy(a), values)
    assert a.tobytes() == values.tobytes()


def test_values_are_shared_while_held_and_read_again_once_dropped():
    reads = []
    a = _lazy(np.ones((2, 2), np.float32), reads)
    first = np.asarray(a)
    assert np.asarray(a) is first and len(reads) == 1  # as a numpy field is shared
    del first
    np.asarray(a)
    assert len(reads) == 2  # nothing was kept alive


def test_a_read_that_disagrees_with_the_header_is_refused():
    a = LazyArray((2, 2), np.float32, lambda: np.zeros((2, 3), np.float32), "bad.h5:w")
    with pytest.raises(ValueError, match="bad.h5:w read as"):
        np.asarray(a)


def test_derived_is_lazy_only_when_a_source_is():
    reads = []
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert isinstance(derived(values, (3, 2), np.float32, lambda v: v.T), np.ndarray)
    lazy_t = derived(_lazy(values, reads), (3, 2), np.float32, lambda v: np.ascontiguousarray(v.T))
    both = derived((_lazy(values, reads), None), (2, 3), np.float32, lambda v, none: v * 2 if none is None else v)
    assert isinstance(lazy_t, LazyArray) and reads == []
    assert np.array_equal(lazy_t, values.T) and np.array_equal(both, values * 2) and len(reads) == 2


def test_item_assignment_sticks_as_it_does_in_an_array():
    reads = []
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    a = _lazy(values, reads)
    a[0, 0] = np.nan
    a[1] *= 2
    del values
    assert np.isnan(np.asarray(a)[0, 0]) and np.array_equal(np.asarray(a)[1], [6, 8, 10]) and len(reads) == 1


def test_np_array_of_a_lazy_array_is_a_copy_of_its_own_and_np_asarray_shares_the_values():
    values = np.arange(6.0).reshape(2, 3)
    values.flags.writeable = False  # as a read-only view of a mapped file is
    a = LazyArray(values.shape, values.dtype, lambda: values)
    copied = np.array(a)
    assert copied.flags.writeable and copied.base is None and np.array_equal(copied, values)
    copied[0, 0] = 9.0
    assert values[0, 0] == 0.0
    assert np.asarray(a) is values
    assert np.array(a, dtype=np.float32).flags.writeable


def test_a_joined_array_is_written_part_by_part_and_reads_as_its_parts_joined():
    from rnnx.lazy import chunks, joined

    source = np.arange(24.0, dtype=np.float32).reshape(4, 6)
    stored = LazyArray(source.shape, source.dtype, lambda: source)
    swapped = joined(stored, (1, 4, 6), np.float32, lambda v: [v[2:], v[:2]])  # two gate blocks swapped
    parts = list(chunks(swapped))
    assert [p.shape for p in parts] == [(2, 6), (2, 6)]
    assert all(np.shares_memory(p, source) for p in parts)  # views of the source: nothing was joined
    expected = np.concatenate([source[2:], source[:2]])[None]
    assert np.array_equal(np.asarray(swapped), expected)
    assert b"".join(p.tobytes() for p in parts) == expected.tobytes()
    assert np.array_equal(joined(source, (1, 4, 6), np.float32, lambda v: [v[2:], v[:2]]), expected)  # eager
    swapped[0, 0, 0] = -1.0  # written values are the array's from then on, also for writers
    assert [p.shape for p in chunks(swapped)] == [(1, 4, 6)] and next(chunks(swapped))[0, 0, 0] == -1.0
