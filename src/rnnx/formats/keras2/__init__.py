"""Keras 2 HDF5 (every era, CuDNNLSTM / CuDNNGRU included): reads and writes weights files
(`save_weights`) and full models (`model.save`). Entry point: `h5` (the format's read / write /
run_layer); `layout` holds the kernel layouts and recognition from shapes, `config` the
model_config parsing and the CuDNN <-> CPU class rewrite. Shared with keras3 (same cell layouts).
"""
