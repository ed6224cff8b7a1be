"""Exporters: a checked model and its weights written in another framework's terms.

- `onnx_model.py`: an ONNX graph built node by node with onnx.helper, one lowering per op
  (a table, like the backends' kernels: a plugin op registers its own);
- `torch_source.py`: a standalone PyTorch file, one nn.Module written out as source.

Both read the checked layer graph (shapes and resolved attributes), never a traced run.
"""

# The built-in ops every exporter lowers, each by the function `lower_<name>` of its module (a
# depthwise conv is a grouped conv). An exporter builds its table with `lowerings(globals())`, so
# a new op is added here once and each exporter fails loudly until it has the function.
LOWERED_BY = {
    "conv": "conv", "dwconv": "conv", "dense": "dense", "pool": "pool", "batchnorm": "batchnorm",
    "dropout": "dropout", "layernorm": "layernorm", "layerscale": "layerscale",
    "stochastic_depth": "stochastic_depth", "flatten": "flatten", "add": "add", "mul": "mul",
    "concat": "concat", "split": "split", "shuffle": "shuffle", "upsample": "upsample",
    "conv_transpose": "conv_transpose",
}


def lowerings(namespace: dict) -> dict:
    """op -> lowering function, from an exporter module's namespace."""
    return {op: namespace[f"lower_{name}"] for op, name in LOWERED_BY.items()}
