"""Pictures: `cnnc graph` (SVG, PNG, DOT, Mermaid), `cnnc plot` and the curves `cnnc train` keeps,
and run folders (runs/<model>/<n>). The SVGs are read back with an XML parser and checked for
what a reader needs: every layer once, no two boxes overlapping, every edge drawn from its source
box to its target box, every block's frame around its layers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from cnnc.pipeline import compile_file, compile_text
from cnnc.viz.curves import curves_canvas, nice_ticks
from cnnc.viz.graph import graph_canvas, groups_of, to_dot, to_mermaid

ROOT = Path(__file__).resolve().parents[1]
SVG = "{http://www.w3.org/2000/svg}"
EXAMPLES = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "examples").rglob("*.cnn"))


def cnnc(*args, cwd=ROOT):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "cnnc", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def boxes_and_edges(svg: str):
    root = ET.fromstring(svg)  # parses as XML, or raises
    boxes = {}
    for rect in root.iter(f"{SVG}rect"):
        if rect.get("class") == "box":
            name = rect.get("data-layer")
            assert name not in boxes, f"{name} drawn twice"
            boxes[name] = tuple(float(rect.get(k)) for k in ("x", "y", "width", "height"))
    edges = {}
    for line in root.iter(f"{SVG}polyline"):
        if line.get("class") == "edge":
            pts = [tuple(map(float, p.split(","))) for p in line.get("points").split()]
            edges[(line.get("data-from"), line.get("data-to"))] = pts
    frames = {}
    for g in root.iter(f"{SVG}g"):
        if g.get("class") == "block":
            rect = g.find(f"{SVG}rect")
            frames[g.get("data-block")] = tuple(float(rect.get(k))
                                                for k in ("x", "y", "width", "height"))
    return boxes, edges, frames


def check_graph_svg(model):
    boxes, edges, frames = boxes_and_edges(graph_canvas(model).to_svg())
    graph = model.graph
    assert set(boxes) == {layer.name for layer in graph.layers()}
    names = sorted(boxes)
    for i, a in enumerate(names):  # no two boxes overlap
        ax, ay, aw, ah = boxes[a]
        for b in names[i + 1:]:
            bx, by, bw, bh = boxes[b]
            assert ax + aw <= bx or bx + bw <= ax or ay + ah <= by or by + bh <= ay, (a, b)
    want = {(src, layer.name) for layer in graph.layers() for src in layer.inputs}
    assert set(edges) == want
    for (src, dst), pts in edges.items():  # from the bottom of one box to the top of the other
        sx, sy, sw, sh = boxes[src]
        dx, dy, dw, dh = boxes[dst]
        assert sx <= pts[0][0] <= sx + sw and pts[0][1] == pytest.approx(sy + sh)
        assert dx <= pts[-1][0] <= dx + dw and pts[-1][1] == pytest.approx(dy)
    groups = groups_of(graph)
    assert set(frames) == set(groups)
    for prefix, (fx, fy, fw, fh) in frames.items():
        for m in groups[prefix]["members"]:
            x, y, w, h = boxes[m]
            assert fx < x and x + w < fx + fw and fy < y and y + h < fy + fh, (prefix, m)
    return boxes, edges, frames


@pytest.mark.parametrize("path", EXAMPLES)
def test_every_example_draws_a_sound_graph(path):
    check_graph_svg(compile_file(str(ROOT / path)))


def test_resnet_and_inception_pictures_have_their_structure():
    boxes, edges, frames = check_graph_svg(compile_file(str(ROOT / "examples/zoo/resnet18.cnn")))
    assert len(boxes) == 69 and {"basic_1", "down_1", "down_1.y"} <= set(frames)
    adds = [n for n in boxes if n.endswith("add_1")]
    assert len(adds) == 8 and all(sum(1 for e in edges if e[1] == a) == 2 for a in adds)
    # the spine (the longest path) is one straight column
    column = {round(boxes[n][0] + boxes[n][2] / 2) for n in ("input", "conv_1", "pool_1",
                                                           "basic_1.add_1", "down_3.add_1")}
    assert len(column) == 1
    boxes, edges, frames = check_graph_svg(compile_file(str(ROOT /
                                                            "examples/inception_block.cnn")))
    concat = [n for n in boxes if n.endswith("concat_1")]
    assert len(concat) == 2 and all(sum(1 for e in edges if e[1] == c) == 4 for c in concat)
    # the four branches of a module sit side by side on one rank
    firsts = [n for n, (x, y, w, h) in boxes.items() if n.startswith("inception_1.")
              and edges.get(("input", n))]
    assert len(firsts) == 4 and len({boxes[n][1] for n in firsts}) == 1


RANDOM_GRAPH = """
input 16x16x3
a = conv 8 3 pad=same relu
b = conv 8 1
from a
c = pool 3 stride=1 pad=1
d = conv 8 5 pad=same
add b c d
t = here
conv 8 3 pad=same
concat t
flatten
dense 4 softmax
"""


def test_dot_and_mermaid_name_every_layer_and_edge():
    model = compile_text(RANDOM_GRAPH, "g.cnn")
    assert model.ok, model.diagnostics
    check_graph_svg(model)
    dot, mmd = to_dot(model), to_mermaid(model)
    assert dot.startswith('digraph "g"') and dot.rstrip().endswith("}")
    edges = {(s, layer.name) for layer in model.graph.layers() for s in layer.inputs}
    dot_edges = {line.strip().rstrip(";") for line in dot.splitlines() if "->" in line}
    mmd_edges = {line.strip() for line in mmd.splitlines() if "-->" in line}
    assert len(dot_edges) == len(mmd_edges) == len(edges)
    for layer in model.graph.layers():
        ident = "n_" + layer.name.replace(".", "_")
        assert sum(line.strip().startswith(ident + " [") for line in dot.splitlines()) == 1
        assert sum(line.strip().startswith(ident + "[") or line.strip().startswith(ident + "(")
                   for line in mmd.splitlines()) == 1
    resnet = compile_file(str(ROOT / "examples/zoo/resnet18.cnn"))
    assert 'subgraph "cluster_down_1.y"' in to_dot(resnet)
    assert "subgraph n_block_down_1_y" in to_mermaid(resnet)


def test_graph_command_writes_each_format_and_refuses_others(tmp_path):
    model = ROOT / "examples/inception_block.cnn"
    for name in ("m.svg", "m.png", "m.dot", "m.mmd"):
        r = cnnc("graph", model, "-o", tmp_path / name)
        assert r.returncode == 0, r.stderr
        assert (tmp_path / name).stat().st_size > 500
    from PIL import Image

    with Image.open(tmp_path / "m.png") as img:
        assert img.size[0] > 600 and img.size[1] > 800
    r = cnnc("graph", model, "-o", tmp_path / "m.pdf")
    assert r.returncode == 1 and "Traceback" not in r.stderr and ".svg" in r.stderr
    r = cnnc("graph", model, cwd=tmp_path)
    assert r.returncode == 0 and (tmp_path / "inception_block.svg").is_file()


# ---------------------------------------------------------------------------------------------
# Curves


def test_nice_ticks_are_round_and_cover_the_range():
    for lo, hi in ((0.23, 0.91), (0.0, 2.31), (1e-4, 3e-4), (5.0, 5.0)):
        ticks = nice_ticks(lo, hi)
        assert ticks[0] <= lo and ticks[-1] >= hi and 2 <= len(ticks) <= 8
        steps = {round(b - a, 12) for a, b in zip(ticks, ticks[1:])}
        assert len(steps) == 1


def test_curves_draw_one_point_per_epoch_per_series():
    records = [{"header": {}}] + [
        {"epoch": e, "train_loss": 1 / e, "train_accuracy": 1 - 0.5 / e, "val_loss": 1.1 / e,
         "val_accuracy": 1 - 0.6 / e, "seconds": 1.0, "images_per_second": 5.0}
        for e in range(1, 6)] + [{"test_loss": 0.3, "test_accuracy": 0.9, "test_images": 10,
                                  "weights": "last", "epochs": 5}]
    root = ET.fromstring(curves_canvas(records, "t").to_svg())
    series = [g for g in root.iter(f"{SVG}g") if g.get("class") == "series"]
    assert [g.get("data-name") for g in series] == ["train", "validation"] * 2
    assert all(len(g.findall(f"{SVG}circle")) == 5 for g in series)
    assert any("test 0.9000" in (t.text or "") for t in root.iter(f"{SVG}text"))


def test_train_keeps_runs_with_everything_and_plot_redraws_them(tmp_path):
    model = tmp_path / "tiny.cnn"
    model.write_text("input 8x8x1\nconv 4 3 relu\nflatten\ndense 10 softmax\n"
                     "train:\n    epochs 2\n    flip\n")
    for _ in range(2):
        r = cnnc("train", model, "--limit", "200", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    assert "run folder: runs/tiny/2" in r.stdout
    runs = tmp_path / "runs" / "tiny"
    assert sorted(p.name for p in runs.iterdir()) == ["1", "2"]
    run = runs / "2"
    assert {p.name for p in run.iterdir()} >= {
        "model.cnn", "run.json", "metrics.jsonl", "last.safetensors", "best.safetensors",
        "curves.svg"}
    assert (run / "model.cnn").read_text() == model.read_text()
    info = json.loads((run / "run.json").read_text())
    assert info["settings"]["flip"] is True and info["settings"]["epochs"] == 2
    assert info["classes"] == [str(d) for d in range(10)] and info["data"] == "digits"
    series = [g for g in ET.parse(run / "curves.svg").getroot().iter(f"{SVG}g")
              if g.get("class") == "series"]
    assert len(series[0].findall(f"{SVG}circle")) == 2
    r = cnnc("plot", run, "-o", tmp_path / "c.png")
    assert r.returncode == 0, r.stderr
    from PIL import Image

    with Image.open(tmp_path / "c.png") as img:
        assert img.format == "PNG"
    r = cnnc("plot", tmp_path)
    assert r.returncode == 1 and "metrics.jsonl" in r.stderr and "Traceback" not in r.stderr
    # --out still chooses
    r = cnnc("train", model, "--limit", "100", "--epochs", "1", "--out", "mine", cwd=tmp_path)
    assert r.returncode == 0 and (tmp_path / "mine" / "run.json").is_file()
    assert sorted(p.name for p in runs.iterdir()) == ["1", "2"]


@pytest.mark.parametrize("command", ["check", "summary"])
def test_check_and_summary_import_no_pillow_or_networkx(command):
    code = f"""
import contextlib, io, sys
from cnnc.cli import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    try:
        main([{command!r}, "examples/zoo/resnet18.cnn"])
    except SystemExit as e:
        assert e.code == 0, e.code
print(sorted(m for m in ("PIL", "networkx", "numpy", "torch") if m in sys.modules))
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
