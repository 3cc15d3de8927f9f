"""Keras 3 files: the `.keras` archive (entry point `archive`) and the bare `.weights.h5`
(entry point `weights`), both read and written. `layout` maps the Keras 3 weights tree to the
canonical form (cells store Keras 2's layouts, so it builds on keras2.layout); `config`
translates a Keras 2 model config into a Keras 3 one.
"""
