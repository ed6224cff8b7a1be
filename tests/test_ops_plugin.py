"""Third-party ops through the `cnnc.ops` entry-point group.

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

ROOT = Path(__file__).resolve().parents[1]

# A module that registers its ops when imported (the entry point names the module).
UPSAMPLE_MODULE = '''
"""`upsample F`: nearest-neighbour upsampling; `scale`: a learned per-channel scale."""
from cnnc.ops import Arg, OpSchema, ShapeError, register


def infer_upsample(attrs, in_shapes):
    (shape,) = in_shapes
    if len(shape) != 3:
        raise ShapeError("`upsample` needs an image", code="shape")
    h, w, c = shape
    return (h * attrs["factor"], w * attrs["factor"], c)


register(OpSchema(
    name="upsample",
    summary="nearest-neighbour upsampling by an integer factor",
    positional=(Arg("factor", "int", 2, min=1),),
    infer=infer_upsample,
    window=lambda attrs: (1, 1, 1, 1),
    describe=lambda attrs: f"upsample {attrs['factor']}",
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


def install(site: Path, dist: str, modules: dict[str, str], entry_points: dict[str, str]):
    """A fake installed distribution: what `pip install` would leave in site-packages."""
    for name, source in modules.items():
        (site / f"{name}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = ["[cnnc.ops]"] + [f"{k} = {v}" for k, v in entry_points.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")


def run(site: Path, code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=60)


def test_a_plugin_op_compiles_and_is_costed(tmp_path):
    install(tmp_path, "fake_cnnc_ops", {"fake_cnnc_ops": UPSAMPLE_MODULE,
                                        "fake_cnnc_more": CALLABLE_MODULE},
            {"upsample": "fake_cnnc_ops", "identity2": "fake_cnnc_more:make"})
    r = run(tmp_path, """
        import json, cnnc
        model = cnnc.compile("input 8x8x3\\nconv 4 3 pad=same\\nupsample 2\\nscale\\nidentity2\\n"
                             "upsample\\nflatten\\ndense 10")
        assert model.ok, model.diagnostics
        s = model.summary()
        print(json.dumps({"shapes": [list(l.shape) for l in model.graph.layers()],
                          "ops": [l.op for l in model.graph.layers()],
                          "rows": [[r.description, r.params, r.macs] for r in s.rows],
                          "total": s.total_params, "macs": s.macs,
                          "rf": model.graph["upsample_1"].receptive_field}))
    """)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["ops"] == ["input", "conv", "upsample", "scale", "identity2", "upsample",
                          "flatten", "dense"]
    assert out["shapes"] == [[8, 8, 3], [8, 8, 4], [16, 16, 4], [16, 16, 4], [16, 16, 4],
                             [32, 32, 4], [4096], [10]]
    conv, scale, dense = 3 * 3 * 3 * 4 + 4, 4, 4096 * 10 + 10
    assert out["total"] == conv + scale + dense
    assert out["rows"][2] == ["upsample 2", 0, 0]
    assert out["rows"][3] == ["scale", 4, 16 * 16 * 4]
    assert out["macs"] == 8 * 8 * 4 * 27 + 16 * 16 * 4 + 4096 * 10
    assert out["rf"] == 3


def test_plugin_ops_in_the_cli_and_in_diagnostics(tmp_path):
    install(tmp_path, "fake_cnnc_ops", {"fake_cnnc_ops": UPSAMPLE_MODULE},
            {"upsample": "fake_cnnc_ops"})
    (tmp_path / "m.cnn").write_text("input 8x8x3\nupsampel 2\nupsample 2 mode=x\nflatten\n"
                                    "upsample\n")
    r = run(tmp_path, f"""
        from cnnc.cli import main
        main(["check", {str(tmp_path / "m.cnn")!r}])
    """)
    assert r.returncode == 1, r.stderr
    assert "unknown layer `upsampel`" in r.stderr and "did you mean `upsample`?" in r.stderr
    assert "`upsample` has no option `mode`" in r.stderr
    assert "`upsample` needs an image" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_broken_plugin_does_not_break_the_compiler(tmp_path):
    install(tmp_path, "broken_cnnc_ops", {"broken_cnnc_ops": "raise ImportError('no gpu here')\n",
                                          "clashing_cnnc_ops": UPSAMPLE_MODULE.replace(
                                              'name="upsample"', 'name="conv"')},
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
