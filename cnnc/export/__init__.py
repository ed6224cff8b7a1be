"""Exporters: a checked model and its weights written in another framework's terms.

- `onnx_model.py`: an ONNX graph built node by node with onnx.helper, one lowering per op
  (a table, like the backends' kernels: a plugin op registers its own);
- `torch_source.py`: a standalone PyTorch file, one nn.Module written out as source.

Both read the checked layer graph (shapes and resolved attributes), never a traced run.
"""
