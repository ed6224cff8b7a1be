"""Every op has a kernel in every built-in backend, and the op contract holds: shape rules are
pure, backends read settled attributes, initial values are declared with the op."""

from __future__ import annotations

import pytest

import cnnc
from cnnc import ops
from cnnc.backends import kernels

BACKENDS = ("numpy", "torch")


def _load(backend: str) -> dict:
    if backend == "torch":
        pytest.importorskip("torch")
    return kernels(backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_op_has_a_kernel(backend):
    table = _load(backend)
    missing = [s.name for s in ops.schemas() if s.name != "input" or backend == "numpy"
               if s.name not in table]
    assert not missing, f"backend {backend!r} has no kernel for: {', '.join(missing)}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_activation_has_a_kernel(backend):
    table = _load(backend)
    names = [a.name for a in ops.activations()]
    assert {"relu", "softmax", "leaky_relu"} <= set(names)
    assert [n for n in names if n not in table] == []


def test_a_missing_kernel_is_a_clear_error():
    from cnnc.backends import _KERNELS
    from cnnc.diagnostics import CnncError

    model = cnnc.compile("input 4x4x1; conv 2 3; flatten; dense 2")
    _load("numpy")
    saved = _KERNELS["numpy"].pop("flatten")
    try:
        with pytest.raises(CnncError, match="backend 'numpy' has no kernel for op 'flatten'"):
            model.to_backend("numpy")
    finally:
        _KERNELS["numpy"]["flatten"] = saved


def test_shape_rules_are_pure_and_settle_apart():
    model = cnnc.compile("input 9x9x4; conv 8 3 stride=2 pad=same relu; dwconv 3 pad=1; "
                         "pool avg 3 pad=1; pool global; dense 3")
    assert model.ok, model.diagnostics
    g = model.graph
    conv, dw, pool, gap = g["conv_1"], g["dwconv_1"], g["pool_1"], g["pool_2"]
    # as written (bound, defaults filled in), untouched by inference
    assert "pads" not in conv.attrs and conv.attrs["pad"] == "same"
    assert "groups" not in dw.attrs and pool.attrs["stride"] is None and gap.attrs["mode"] is None
    # settled
    assert conv.settled["pads"] == (1, 1, 1, 1) and conv.settled["groups"] == 1
    assert conv.settled["activation"] == "relu" and conv.settled["activation_params"] == {}
    assert dw.settled["groups"] == 8 and dw.settled["filters"] == 8
    assert pool.settled["stride"] == (3, 3) and pool.settled["pads"] == (1, 1, 1, 1)
    assert pool.settled["divisor"] == ((2, 3), (2, 3))  # 5x5 input: windows -1..1 and 2..4
    assert gap.settled["mode"] == "avg"
    assert conv.init == {"weight": "he_uniform", "bias": "zeros"}


def test_a_rule_that_writes_into_its_attrs_fails(monkeypatch):
    def impure(attrs, in_shapes):
        attrs["pads"] = (0, 0, 0, 0)
        return in_shapes[0]

    monkeypatch.setattr(ops.get("dropout"), "infer", impure)
    with pytest.raises(TypeError):
        cnnc.compile("input 4; dropout 0.5")


def test_standalone_activation_parameters_are_settled():
    g = cnnc.compile("input 4; leaky_relu 0.2; elu; dense 2 elu").graph
    assert g["leaky_relu_1"].settled["activation_params"] == {"slope": 0.2}
    assert g["elu_1"].settled["activation_params"] == {"alpha": 1.0}
    assert g["dense_1"].settled["activation_params"] == {"alpha": 1.0}  # fused: the defaults
    assert g["dense_1"].fused_activation == "elu" and g["elu_1"].fused_activation is None


def test_an_op_reading_several_tensors_is_known_by_its_arity(monkeypatch):
    """A schema with n_inputs=2 is written like `add`, and given exactly two tensors."""
    monkeypatch.setattr(ops.get("add"), "n_inputs", 2)
    ok = cnnc.compile("input 4x4x2; a = conv 2 1; b = conv 2 1; add a")
    assert ok.ok, ok.diagnostics
    assert ok.graph["add_1"].inputs == ["b", "a"]
    bad = cnnc.compile("input 4x4x2; a = conv 2 1; b = conv 2 1; conv 2 1; add a b")
    (d,) = bad.errors
    assert d.code == "merge-shape" and "`add` reads 2 tensors, but 3 were given" in d.message
    monkeypatch.setattr(ops.get("add"), "n_inputs", 1)  # no longer a merge: `add a` binds args
    assert cnnc.compile("input 4x4x2; a = here; add a").errors[0].code != "merge-shape"
