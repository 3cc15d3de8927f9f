"""The PyTorch backend of the Keras model graph: a code generator.

`writer.write(bundle, path)` turns the model graph (graph/config.py) into `OUT.py`, a readable
`class Model(torch.nn.Module)` with one attribute per Keras layer and one line of forward() per
layer call, and `OUT.safetensors`, its state dict. `registry.py` maps each Keras class to one
converter (`layers/`, one module per family) that adds a submodule and forward lines to a
`Program` (`program.py`); `builder.py` walks the graph. Recurrent layers run in nn.LSTM /
nn.GRU / nn.RNN where those are exact, else in rnnx.torch_nn's step loop.
"""
