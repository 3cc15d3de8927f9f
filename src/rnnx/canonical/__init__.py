"""The canonical form: framework-free numpy description of recurrent layers."""

from .activations import Activation
from .model import Bundle, Direction, OpaqueLayer, RecurrentLayer

__all__ = ["Activation", "Bundle", "Direction", "OpaqueLayer", "RecurrentLayer"]
