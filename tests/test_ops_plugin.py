"""Third-party ops through the `cnnc.ops` and `cnnc.kernels` entry-point groups.

Each test writes a fake installed distribution into a temporary folder (a module plus a
`*.dist-info` with METADATA and entry_points.txt, which is all importlib.metadata reads), then
runs cnnc in a subprocess with that folder on sys.path, so the op registry starts fresh.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# A module that registers its ops when imported (the entry point names the module).
ENLARGE_MODULE = '''
"""`enlarge F`: nearest-neighbour upsampling (a plugin's own, beside the built-in
`upsample`); `scale`: a learned per-channel scale."""
from cnnc.ops import Arg, OpSchema, ShapeError, register


def infer_enlarge(attrs, in_shapes):
    (shape,) = in_shapes
    if len(shape) != 3:
        raise ShapeError("`enlarge` needs an image", code="shape")
    h, w, c = shape
    return (h * attrs["factor"], w * attrs["factor"], c)


register(OpSchema(
    name="enlarge",
    summary="nearest-neighbour upsampling by an integer factor",
    positional=(Arg("factor", "int", 2, min=1),),
    infer=infer_enlarge,
    window=lambda attrs: (1, 1, 1, 1),
    describe=lambda attrs: f"enlarge {attrs['factor']}",
))

register(OpSchema(
    name="scale",
    summary="multiply each channel by a learned factor",
    infer=lambda attrs, ins: ins[0],
    params=lambda attrs, ins: {"weight": (ins[0][-1],)},
    macs=lambda attrs, ins, out: out[0] * out[1] * out[2],
    describe=lambda attrs: "scale",
))
'''

# A callable entry point that returns a schema.
CALLABLE_MODULE = '''
from cnnc.ops import OpSchema


def make():
    return OpSchema(name="identity2", summary="does nothing", infer=lambda a, ins: ins[0])
'''


def install(site: Path, dist: str, modules: dict[str, str], entry_points: dict[str, str],
            kernels: dict[str, str] | None = None):
    """A fake installed distribution: what `pip install` would leave in site-packages."""
    for name, source in modules.items():
        (site / f"{name}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = ["[cnnc.ops]"] + [f"{k} = {v}" for k, v in entry_points.items()]
    if kernels:
        lines += ["[cnnc.kernels]"] + [f"{k} = {v}" for k, v in kernels.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")


def run(site: Path, code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=600)  # a hang guard, not a timing check


def test_a_plugin_op_compiles_and_is_costed(tmp_path):
    install(tmp_path, "fake_cnnc_ops", {"fake_cnnc_ops": ENLARGE_MODULE,
                                        "fake_cnnc_more": CALLABLE_MODULE},
            {"enlarge": "fake_cnnc_ops", "identity2": "fake_cnnc_more:make"})
    r = run(tmp_path, """
        import json, cnnc
        model = cnnc.compile("input 8x8x3\\nconv 4 3 pad=same\\nenlarge 2\\nscale\\nidentity2\\n"
                             "enlarge\\nflatten\\ndense 10")
        assert model.ok, model.diagnostics
        s = model.summary()
        print(json.dumps({"shapes": [list(l.shape) for l in model.graph.layers()],
                          "ops": [l.op for l in model.graph.layers()],
                          "rows": [[r.description, r.params, r.macs] for r in s.rows],
                          "total": s.total_params, "macs": s.macs,
                          "rf": model.graph["enlarge_1"].receptive_field}))
    """)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["ops"] == ["input", "conv", "enlarge", "scale", "identity2", "enlarge",
                          "flatten", "dense"]
    assert out["shapes"] == [[8, 8, 3], [8, 8, 4], [16, 16, 4], [16, 16, 4], [16, 16, 4],
                             [32, 32, 4], [4096], [10]]
    conv, scale, dense = 3 * 3 * 3 * 4 + 4, 4, 4096 * 10 + 10
    assert out["total"] == conv + scale + dense
    assert out["rows"][2] == ["enlarge 2", 0, 0]
    assert out["rows"][3] == ["scale", 4, 16 * 16 * 4]
    assert out["macs"] == 8 * 8 * 4 * 27 + 16 * 16 * 4 + 4096 * 10
    assert out["rf"] == 3


def test_plugin_ops_in_the_cli_and_in_diagnostics(tmp_path):
    install(tmp_path, "fake_cnnc_ops", {"fake_cnnc_ops": ENLARGE_MODULE},
            {"enlarge": "fake_cnnc_ops"})
    (tmp_path / "m.cnn").write_text("input 8x8x3\nenlarg 2\nenlarge 2 mode=x\nflatten\n"
                                    "enlarge\n")
    r = run(tmp_path, f"""
        from cnnc.cli import main
        main(["check", {str(tmp_path / "m.cnn")!r}])
    """)
    assert r.returncode == 1, r.stderr
    assert "unknown layer `enlarg`" in r.stderr and "did you mean `enlarge`?" in r.stderr
    assert "`enlarge` has no option `mode`" in r.stderr
    assert "`enlarge` needs an image" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_broken_plugin_does_not_break_the_compiler(tmp_path):
    install(tmp_path, "broken_cnnc_ops", {"broken_cnnc_ops": "raise ImportError('no gpu here')\n",
                                          "clashing_cnnc_ops": ENLARGE_MODULE.replace(
                                              'name="enlarge"', 'name="conv"')},
            {"broken": "broken_cnnc_ops", "clash": "clashing_cnnc_ops"})
    r = run(tmp_path, """
        import cnnc
        ok = cnnc.compile("input 8x8x1; conv 2 3; flatten; dense 2")
        assert ok.ok, ok.diagnostics
        bad = cnnc.compile("input 8x8x1; warp 2")
        (d,) = bad.diagnostics
        print(d.code)
        for note in d.notes:
            print(note)
    """)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "unknown-op"
    assert any("`broken` (broken_cnnc_ops) failed to load: ImportError: no gpu here" in line
               for line in lines)
    assert any("`clash`" in line and "duplicate registration for op 'conv'" in line
               for line in lines)


# -- a plugin op with its kernels, trained on both backends --------------------------------------

# Three kinds of op, all from outside the package: `chanscale` (a learned per-channel factor,
# its initial value declared with the op), `gatemul` (a two-input op, recognised as such by its
# n_inputs alone) and `softsign` (an activation: one table entry, usable fused).
TRAINED_OPS = '''
from cnnc.ops import Activation, OpSchema, Param, ShapeError, register, register_activation


def infer_gatemul(attrs, in_shapes):
    x, gate = in_shapes
    if gate != x:
        raise ShapeError("`gatemul` needs two tensors of one shape", code="merge-shape")
    return x


register(OpSchema(
    name="chanscale", summary="multiply each channel by a learned factor",
    infer=lambda attrs, ins: ins[0],
    params=lambda attrs, ins: {"weight": Param((ins[0][-1],), 0.5)},
    describe=lambda attrs: "chanscale",
))
register(OpSchema(name="gatemul", summary="x * gate", n_inputs=2, infer=infer_gatemul,
                  describe=lambda attrs: "gatemul"))
register_activation(Activation("softsign", "x / (1 + |x|)"))
'''

NUMPY_KERNELS = '''
import numpy as np
from cnnc.backends import register_kernel


def scale_f(layer, p, inputs, ctx):
    (x,) = inputs
    w = p["weight"].reshape(1, -1, *([1] * (x.ndim - 2)))
    return x * w, (x, w)


def scale_b(layer, p, cache, dy, ctx):
    x, w = cache
    axes = tuple(i for i in range(x.ndim) if i != 1)
    return [dy * w], {"weight": (dy * x).sum(axis=axes)}


def mul_f(layer, p, inputs, ctx):
    a, b = inputs
    return a * b, (a, b)


def mul_b(layer, p, cache, dy, ctx):
    a, b = cache
    return [dy * b, dy * a], {}


def softsign_f(x):
    return x / (1 + np.abs(x)), x


def softsign_b(dy, x):
    return dy / (1 + np.abs(x)) ** 2


register_kernel("numpy", "chanscale", (scale_f, scale_b))
register_kernel("numpy", "gatemul", (mul_f, mul_b))
register_kernel("numpy", "softsign", (softsign_f, softsign_b))
'''

TORCH_KERNELS = '''
import torch
import torch.nn.functional as F
from torch import nn


class ChanScale(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(channels))

    def forward(self, x):
        return x * self.weight.reshape(1, -1, *([1] * (x.dim() - 2)))


class GateMul(nn.Module):
    def forward(self, a, b):
        return a * b


def register():
    from cnnc.backends import register_kernel

    register_kernel("torch", "chanscale", lambda layer, in_shapes: ChanScale(in_shapes[0][-1]))
    register_kernel("torch", "gatemul", lambda layer, in_shapes: GateMul())
    register_kernel("torch", "softsign", F.softsign)
'''

TRAINED_MODEL = "input 8x8x1; conv 6 3 pad=same softsign; a = here; chanscale; gatemul a; " \
                "softsign; pool 2; flatten; dense 10 softmax"


def test_a_plugin_op_with_its_kernels_trains_on_both_backends(tmp_path):
    pytest.importorskip("torch")  # the test runs both backends
    install(tmp_path, "fake_cnnc_trained", {"fake_trained_ops": TRAINED_OPS,
                                            "fake_trained_np": NUMPY_KERNELS,
                                            "fake_trained_torch": TORCH_KERNELS},
            {"trained": "fake_trained_ops"},
            kernels={"numpy": "fake_trained_np", "torch.ops": "fake_trained_torch:register"})
    r = run(tmp_path, f"""
        import json
        import numpy as np
        import cnnc
        from cnnc.data import load_dataset
        from cnnc.train.config import TrainConfig

        model = cnnc.compile({TRAINED_MODEL!r})
        assert model.ok, model.diagnostics
        ds = load_dataset("digits")
        out = {{"ops": [l.op for l in model.graph.layers()],
               "gatemul_inputs": model.graph["gatemul_1"].inputs}}
        # one batch in float64 on both backends: the same loss and gradients
        x = ds.train_x[:16].transpose(0, 3, 1, 2).astype(np.float64)
        y = ds.train_y[:16]
        res = {{}}
        weights = model.to_backend("numpy").get_weights()  # the same values on both sides
        for backend in ("numpy", "torch"):
            session = model.to_backend(backend, dtype="float64", device="cpu")
            session.set_weights(weights)
            res[backend] = session.gradients(x, y)
        (la, ga, _), (lb, gb, _) = res["numpy"], res["torch"]
        out["loss_diff"] = abs(la - lb)
        out["grad_diff"] = max(float(np.abs(ga[k] - gb[k]).max()) for k in ga)
        out["grad_keys_equal"] = sorted(ga) == sorted(gb)
        # train each for two epochs of digits
        config = TrainConfig(optimizer="adam", lr=1e-2, batch_size=32)
        for backend in ("numpy", "torch"):
            session = model.to_backend(backend, device="cpu")
            assert session.get_weights()["chanscale_1.weight"].tolist() == [0.5] * 6
            session.configure_optimizer(config)
            data = session.put(ds.train_x, ds.train_y)
            test = session.put(ds.test_x, ds.test_y)
            before = session.evaluate(test)[0]
            n = len(ds.train_x)
            for epoch in (1, 2):
                perm = np.random.default_rng(epoch).permutation(n)
                for i in range(0, n, 32):
                    session.train_step(data, perm[i:i + 32])
            loss, correct = session.evaluate(test)
            out[backend] = {{"before": before, "after": loss, "accuracy": correct / len(ds.test_y),
                            "scale": session.get_weights()["chanscale_1.weight"].tolist()}}
        print(json.dumps(out))
    """)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["ops"] == ["input", "conv", "chanscale", "gatemul", "softsign", "pool", "flatten",
                          "dense"]
    assert out["gatemul_inputs"] == ["chanscale_1", "conv_1"]  # `a = here` named conv_1
    assert out["grad_keys_equal"]
    # float64 on both sides: what differs is the order of additions, ~1e-16 relative; losses
    # and gradients here are O(1), so 1e-10 is a million times the noise and far below a bug.
    assert out["loss_diff"] < 1e-10 and out["grad_diff"] < 1e-10
    for backend in ("numpy", "torch"):
        got = out[backend]
        assert got["after"] < 0.7 * got["before"], got  # it learns (chance loss is ln 10)
        assert got["accuracy"] > 0.6, got  # chance: 0.1
        assert got["scale"] != [0.5] * 6  # the plugin's parameter is trained


def test_a_plugin_op_without_a_kernel_says_so(tmp_path):
    pytest.importorskip("torch")  # the test runs both backends
    install(tmp_path, "fake_cnnc_nokernel", {"fake_trained_ops": TRAINED_OPS},
            {"trained": "fake_trained_ops"})
    r = run(tmp_path, """
        import cnnc
        from cnnc.diagnostics import CnncError
        model = cnnc.compile("input 4x4x1; chanscale; flatten; dense 2")
        assert model.ok, model.diagnostics
        for backend in ("numpy", "torch"):
            try:
                model.to_backend(backend, device="cpu")
            except CnncError as e:
                print(e.message, "|", e.hint)
    """)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 2
    for backend, line in zip(("numpy", "torch"), lines):
        assert f"backend '{backend}' has no kernel for op 'chanscale'" in line
        assert "register_kernel" in line


def test_a_broken_kernel_plugin_is_named_in_the_error(tmp_path):
    install(tmp_path, "fake_cnnc_brokenkernels",
            {"fake_trained_ops": TRAINED_OPS,
             "fake_broken_np": "raise ImportError('needs a library that is not here')\n"},
            {"trained": "fake_trained_ops"}, kernels={"numpy.broken": "fake_broken_np"})
    r = run(tmp_path, """
        import cnnc
        from cnnc.diagnostics import CnncError
        model = cnnc.compile("input 4x4x1; chanscale; flatten; dense 2")
        try:
            model.to_backend("numpy")
        except CnncError as e:
            print(e.message)
            print(*e.notes, sep="\\n")
        ok = cnnc.compile("input 4x4x1; conv 2 3; flatten; dense 2")
        ok.to_backend("numpy")  # the other ops are not affected
        print("ok")
    """)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "backend 'numpy' has no kernel for op 'chanscale'"
    assert "the kernel plugin `numpy.broken` (fake_broken_np) failed to load: ImportError: " \
           "needs a library that is not here" in lines[1]
    assert lines[-1] == "ok"
