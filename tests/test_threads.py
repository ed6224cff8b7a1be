"""The front end is re-entrant: compiling from several threads at once gives each caller its own
result, the same as compiling alone (a language server or a notebook compiles this way).

Every example, zoo model and golden diagnostic case is compiled once alone, then over and over
from many threads at once; each result must equal the one made alone, down to every span of
every layer and every diagnostic, and every span must name the caller's own file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from cnnc.pipeline import compile_text

ROOT = Path(__file__).resolve().parents[1]
FILES = sorted([*ROOT.glob("examples/**/*.cnn"), *ROOT.glob("tests/diagnostics/*.cnn")])


def fingerprint(model) -> list:
    """What a caller reads from a compiled model: layers with their spans, shapes and costs,
    and the diagnostics with theirs."""
    out = []
    if model.graph is not None:
        for layer in model.graph.layers():
            out.append((layer.name, layer.op, layer.span, layer.text, layer.shape, layer.macs,
                        sorted(layer.params.items()), sorted(layer.arg_spans.items())))
    out += [repr(d) for d in model.diagnostics]
    return out


def spans_of(model) -> list:
    spans = [d.span for d in model.diagnostics]
    if model.graph is not None:
        for layer in model.graph.layers():
            spans.append(layer.span)
            spans.extend(layer.arg_spans.values())
    return spans


def test_many_threads_each_get_their_own_result():
    sources = {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8") for p in FILES}
    assert len(sources) > 40
    alone = {name: fingerprint(compile_text(text, name)) for name, text in sources.items()}
    names = list(sources)
    threads, rounds = 8, 3
    failures: list[str] = []
    barrier = threading.Barrier(threads)

    def work(k: int) -> None:
        barrier.wait()  # start together
        # Each thread walks the files from its own starting point, so at any moment the
        # threads are parsing different files.
        for r in range(rounds):
            for i in range(len(names)):
                name = names[(i * (k + 1) + k * 7 + r) % len(names)]
                model = compile_text(sources[name], name)
                wrong = [s for s in spans_of(model) if s.file != name]
                if wrong:
                    failures.append(f"thread {k}: {name}: span names {wrong[0].file}")
                elif fingerprint(model) != alone[name]:
                    failures.append(f"thread {k}: {name}: result differs from compiling alone")

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often, mid-parse
    try:
        pool = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert not failures, f"{len(failures)} wrong results, first: {failures[:3]}"


COLD = r"""
import sys, threading
sys.setswitchinterval(1e-5)
from cnnc.pipeline import compile_text
barrier = threading.Barrier(8)
bad = []
def work(k):
    name = f"model{k}.cnn"
    barrier.wait()
    m = compile_text(f"input 28x28x1\nconv {k + 1} 3x3 relu\nflatten\ndense 10\n", name)
    if not m.ok or len(m.graph) != 4 or any(l.span.file != name for l in m.graph.layers()):
        bad.append((k, [d.message for d in m.diagnostics]))
ts = [threading.Thread(target=work, args=(k,)) for k in range(8)]
[t.start() for t in ts]
[t.join() for t in ts]
print(bad)
"""


def test_first_compiles_in_a_fresh_process_from_many_threads():
    """The first compile loads the op registry and the parser: threads arriving together must
    each wait for it rather than see it half loaded."""
    for _ in range(3):
        out = subprocess.run([sys.executable, "-c", COLD], cwd=ROOT, capture_output=True,
                             text=True, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert out.stdout.strip() == "[]", out.stdout + out.stderr
