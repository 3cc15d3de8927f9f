"""TF1 name-based checkpoints (tf.train.Saver): a stub until the TF1 reader lands."""

from __future__ import annotations

from ...errors import UnsupportedError


def layers_from_variables(variables, meta_path, forget_bias):
    some = next(iter(variables), "")
    raise UnsupportedError(f"This checkpoint is a TF1 name-based checkpoint (variables such as {some!r}, no object "
                           f"graph); this rnnx does not read TF1 checkpoints yet.")
