"""ReLU after max pooling instead of before: the one reordering the torch backend runs.

    moved = relu_after_max_pool(graph)   # {pool layer: the layer whose activation moves}

`conv; bn; relu; pool 2` is how nearly every CNN is written, and max pooling commutes with
ReLU (and ReLU6): both are monotone, so max(relu(window)) = relu(max(window)). Applied after a
2x2 pool, the activation reads and writes a quarter of the values, forward and backward (in
examples/fashion_fast.cnn's step, 7-9% of the time, measured with PyTorch's own layers).

The reordering is exact in floating point, not only in real arithmetic, values and gradients
alike: ReLU and ReLU6 change no value inside their linear range, so they create no new ties
there, and where they flatten (x <= 0; x >= 6 for ReLU6) their gradient is 0 either way. The
gradient of the window's maximum goes to the same element (the first maximum) in both orders,
or to none. What it needs:

- the activation is ReLU or ReLU6, standalone (`relu`) or fused (`conv 32 3x3 relu`), and the
  pool, max pooling over windows or global max pooling, is the only reader of its output (and
  that output is not the model's);
- every window holds at least one real element, so that no window's maximum is the padding's
  -inf (relu(-inf) is 0, not -inf). The checker guarantees it for every pool it accepts, by
  PyTorch's two rules: pads are at most half the window, and with ceil=true the last window
  starts inside the input or its leading padding (cnnc/ops/pool.py, cnnc/ops/shapes.py;
  tests/test_torch_backend.py sweeps the pools it accepts to hold it to that).

cnnc/backends/torch/lowering.py runs the model in this order; cnnc/analysis/memory.py counts
what autograd keeps in it. The NumPy reference runs the graph as written, and
tests/test_backend_agreement.py holds the two together.
"""

from __future__ import annotations

COMMUTING = ("relu", "relu6")  # monotone, and exact where they are not flat


def _is_max_pool(layer) -> bool:
    if layer.op != "pool":
        return False
    a = layer.settled
    return a.get("kind") == "max" or (a.get("kind") == "global" and a.get("mode") == "max")


def relu_after_max_pool(graph) -> dict[str, str]:
    """{max pool layer's name: the name of the layer whose ReLU moves after it} for every pool
    where the reordering is exact (see the module's docstring). The layer is a standalone
    activation (it then runs after the pool, on the pool's output) or one whose fused
    activation is applied after the pool instead."""
    moved = {}
    for pool in graph.layers():
        if not _is_max_pool(pool) or len(pool.inputs) != 1 or pool.fused_activation:
            continue
        src = graph[pool.inputs[0]]
        if (src.activation in COMMUTING and src.name != graph.output
                and graph.consumers(src.name) == [pool.name]):
            moved[pool.name] = src.name
    return moved
