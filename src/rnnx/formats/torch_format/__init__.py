"""PyTorch: state dicts and checkpoints (`pt`, the entry point for .pt / .pth / .bin / .ckpt /
.tar), safetensors state dicts (`safetensors_file`) and the nn.Module source target
(`module_source`). `layout` groups state-dict keys into layers (no torch import); `zip_pickle`
reads torch.save's zip format with numpy and a restricted unpickler. Named torch_format so that
`import torch` inside it plainly means the torch package.
"""
