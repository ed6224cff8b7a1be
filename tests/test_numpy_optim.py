"""NumPy optimizers against torch.optim: identical trajectories (float64) and state round trips."""

from __future__ import annotations

import numpy as np
import pytest
from optional_torch import torch  # a stand-in that skips when torch is absent

from cnnc.backends.numpy.optim import SGD, Adam, Optimizer, make_optimizer

CONFIGS = {
    "sgd": ("sgd", {}),
    "sgd_momentum": ("sgd", {"momentum": 0.9}),
    "sgd_momentum_dampening": ("sgd", {"momentum": 0.8, "dampening": 0.3}),
    "sgd_nesterov": ("sgd", {"momentum": 0.9, "nesterov": True}),
    "sgd_weight_decay": ("sgd", {"weight_decay": 0.05}),
    "sgd_all": ("sgd", {"momentum": 0.7, "nesterov": True, "weight_decay": 0.01}),
    "adam": ("adam", {}),
    "adam_betas_eps": ("adam", {"betas": (0.8, 0.95), "eps": 1e-6}),
    "adam_weight_decay": ("adam", {"weight_decay": 0.1}),
    "adam_amsgrad": ("adam", {"amsgrad": True, "weight_decay": 0.01}),
}
LR = {"sgd": 0.05, "adam": 0.01}


def _problem(seed=0):
    """A small linear model y = x @ W.T + b with a squared loss, plus its data."""
    r = np.random.default_rng(seed)
    params = {"fc.weight": r.standard_normal((3, 4)), "fc.bias": r.standard_normal(3)}
    x, target = r.standard_normal((16, 4)), r.standard_normal((16, 3))
    return params, x, target


def _grads(params, x, target, step):
    """Gradient of mean((x W^T + b - target)^2) with a step-dependent input scaling, so that
    successive gradients differ in direction and size (exercises momentum and Adam moments)."""
    xs = x * (1 + 0.1 * np.sin(step))
    err = xs @ params["fc.weight"].T + params["fc.bias"] - target  # (16, 3)
    g = 2 * err / err.size
    return {"fc.weight": g.T @ xs, "fc.bias": g.sum(0)}


def _torch_optimizer(kind, tparams, kw):
    return (torch.optim.SGD if kind == "sgd" else torch.optim.Adam)(tparams, lr=LR[kind], **kw)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_trajectory_matches_torch(name):
    kind, kw = CONFIGS[name]
    params, x, target = _problem()
    tparams = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in params.items()}
    opt = make_optimizer(kind, LR[kind], **kw)
    topt = _torch_optimizer(kind, list(tparams.values()), kw)
    for step in range(20):
        grads = _grads(params, x, target, step)
        # each side gets the same gradient function evaluated at its own parameters
        for k, tp in tparams.items():
            tp.grad = torch.tensor(_grads({n: p.detach().numpy() for n, p in tparams.items()}, x, target, step)[k])
        opt.step(params, grads)
        topt.step()
        # float64 on both sides, the same arithmetic in other orders: measured at most 4.4e-16
        # apart (2 ulps of 1; parameters of order 1) over these configurations x 20 steps
        for k, tp in tparams.items():
            np.testing.assert_allclose(params[k], tp.detach().numpy(), rtol=0, atol=1e-13,
                                       err_msg=f"step {step} {k}")
    # the parameters did move
    assert not np.allclose(params["fc.weight"], _problem()[0]["fc.weight"])


def test_update_is_in_place_and_keeps_dtype():
    p = {"w": np.ones(3, np.float32)}
    alias = p["w"]
    for opt in (SGD(0.1, momentum=0.9), Adam(0.1, weight_decay=0.1, amsgrad=True)):
        opt.step(p, {"w": np.full(3, 0.5, np.float32)})
        opt.step(p, {"w": np.full(3, 0.25, np.float32)})
        assert p["w"] is alias and p["w"].dtype == np.float32
        assert all(v.dtype == np.float32 for v in opt.state_dict().values() if isinstance(v, np.ndarray))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_state_dict_round_trip(name):
    kind, kw = CONFIGS[name]
    # uninterrupted: 12 steps
    p_ref, x, target = _problem(1)
    ref = make_optimizer(kind, LR[kind], **kw)
    for s in range(12):
        ref.step(p_ref, _grads(p_ref, x, target, s))

    # interrupted: 6 steps, save, fresh optimizer, load, 6 more steps
    p, _, _ = _problem(1)
    opt = make_optimizer(kind, LR[kind], **kw)
    for s in range(6):
        opt.step(p, _grads(p, x, target, s))
    state = opt.state_dict()
    # only flat arrays and plain numbers: storable in safetensors without pickle
    for key, value in state.items():
        assert isinstance(key, str)
        assert isinstance(value, (np.ndarray, int, float)), key
    assert state["step"] == 6
    if kind == "adam":
        assert set(k for k in state if "/" in k and not k.startswith("hparam/")) >= {
            "exp_avg/fc.weight", "exp_avg_sq/fc.weight", "exp_avg/fc.bias", "exp_avg_sq/fc.bias"}
    elif kw.get("momentum"):
        assert "momentum_buffer/fc.weight" in state
    state = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in state.items()}
    resumed = make_optimizer(kind, LR[kind], **kw)
    resumed.load_state_dict(state)
    for s in range(6, 12):
        resumed.step(p, _grads(p, x, target, s))
    for k in p:  # the same arithmetic from the same state: bit for bit (measured: 0 apart)
        np.testing.assert_array_equal(p[k], p_ref[k])


def test_state_dict_through_safetensors(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    p, x, target = _problem(2)
    opt = Adam(0.01, amsgrad=True)
    for s in range(3):
        opt.step(p, _grads(p, x, target, s))
    state = opt.state_dict()
    # numbers become 0-d arrays in the file; load_state_dict accepts those
    st.save_file({k: np.asarray(v) for k, v in state.items()}, str(tmp_path / "opt.safetensors"))
    loaded = st.load_file(str(tmp_path / "opt.safetensors"))
    opt2 = Adam(0.5)
    opt2.load_state_dict(loaded)
    assert opt2.step_count == 3 and opt2.lr == 0.01
    for k, v in state.items():
        if isinstance(v, np.ndarray):
            np.testing.assert_array_equal(opt2.state_dict()[k], v)


def test_make_optimizer():
    assert isinstance(make_optimizer("SGD", 0.1, momentum=0.5), SGD)
    assert isinstance(make_optimizer("adam", 0.1), Adam)
    assert isinstance(make_optimizer("adam", 0.1), Optimizer)
    with pytest.raises(ValueError):
        make_optimizer("rmsprop", 0.1)
    with pytest.raises(ValueError):
        SGD(0.1, nesterov=True)  # nesterov needs momentum, as in torch
