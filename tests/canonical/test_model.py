import numpy as np
import pytest

from rnnx.canonical import Bundle, Direction, OpaqueLayer, RecurrentLayer
from rnnx.errors import UsageError


def _direction(u=3, inp=2, gates=4, dtype=np.float32, **extra):
    rng = np.random.default_rng(0)
    return Direction(W=rng.standard_normal((gates * u, inp)).astype(dtype),
                     R=rng.standard_normal((gates * u, u)).astype(dtype),
                     b_w=rng.standard_normal(gates * u).astype(dtype), **extra)


def test_derived_sizes():
    layer = RecurrentLayer("l", "lstm", [_direction(), _direction()])
    assert (layer.units, layer.input_size, layer.num_directions, layer.bias_layout) == (3, 2, 2, "single")
    assert layer.kind == "lstm"


def test_shapes_are_checked_at_construction():
    bad = _direction()
    bad.R = bad.R[:, :2]
    with pytest.raises(ValueError, match="R has shape"):
        RecurrentLayer("l", "lstm", [bad])


@pytest.mark.parametrize("u, inp", [(0, 2), (3, 0), (0, 0)])
def test_zero_sized_layers_are_refused(u, inp):
    with pytest.raises(ValueError, match="needs at least one of each"):
        RecurrentLayer("l", "lstm", [_direction(u=u, inp=inp)])


@pytest.mark.parametrize("clip", [0.0, -1.0, float("nan"), float("inf")])
def test_a_clip_that_is_no_positive_threshold_is_refused(clip):
    with pytest.raises(ValueError, match="not a positive threshold"):
        RecurrentLayer("l", "lstm", [_direction()], clip=clip)


def test_integer_weights_are_refused_with_what_to_do():
    with pytest.raises(ValueError, match="holds int32 weights; rnnx reads float16, float32 and float64"):
        RecurrentLayer("l", "lstm", [_direction(dtype=np.int32)])


def test_mixed_dtypes_are_refused():
    d = _direction()
    d.b_w = d.b_w.astype(np.float64)
    with pytest.raises(ValueError, match="mixed dtypes"):
        RecurrentLayer("l", "lstm", [d])


def test_reset_before_gru_is_its_own_kind():
    assert RecurrentLayer("g", "gru", [_direction(gates=3)], reset_after=False).kind == "gru-reset-before"


def test_candidate_bias_foldable_only_when_zero():
    d = _direction(gates=3, b_r=np.zeros(9, np.float32))
    assert RecurrentLayer("g", "gru", [d]).candidate_bias_foldable()
    d.b_r[7] = 0.5
    assert not RecurrentLayer("g", "gru", [d]).candidate_bias_foldable()


def test_bundle_names_unique_and_lookup_says_what_exists():
    layer = RecurrentLayer("rnn_1", "rnn", [_direction(gates=1)])
    with pytest.raises(ValueError, match="unique"):
        Bundle([layer, OpaqueLayer("rnn_1", "Dense")])
    with pytest.raises(UsageError, match="rnn_1"):
        Bundle([layer]).layer("nope")
    with pytest.raises(UsageError, match="^model.h5 has no recurrent layer named 'nope'; the layers are: rnn_1."):
        Bundle([layer], {"path": "model.h5"}).layer("nope")
