"""Fuzz cnnc's front end and its file readers, in process, and print what came of it.

    python benchmarks/fuzz.py --programs 100000 --files 10000 --seed 0

Programs: grammar-aware generation (random layers, sizes, options, blocks, merges and `train:`
sections drawn from the op registry) and mutation of real programs (examples/ and the golden
diagnostics of tests/diagnostics/): token-level (delete, repeat, swap, replace a number by an
extreme one: 0, -1, 2**31, a 5,000-digit literal, 1e308) and byte-level (flip, insert, truncate,
invalid UTF-8, NUL). Each is compiled; a model that compiles is summarised and its training
memory estimated, and one in BACKEND_EVERY small ones is built on the NumPy backend and run
forward on one image and one training step on two (half of them on the torch backend too,
when torch is installed).

Files: valid small files of every format cnnc reads (safetensors weights, a run folder's
state.safetensors and metrics.jsonl, npz data sets, IDX files raw and gzip'd) damaged at the
byte level (flips, truncation, extension, splices of huge header values) and at the structure
level (header JSON fields and metadata edited), then read by the loader a command would use; a
damaged run folder is resumed by the training engine.

Every case ends in one of: ok (the input was still valid), a diagnostic (a Diagnostic or a
CnncError: what a user sees as a located error or `cnnc: error:`), an internal error (any other
exception: a bug), or a hang: over --timeout seconds of CPU time (SIGPROF), or blocked for
--wall-timeout seconds (SIGALRM). CPU time, not wall time, is what makes a case slow: on a
loaded machine a case that needs 2 CPU seconds may wait 20 for them. The table gives,
per kind, the counts, the slowest case and the process's peak memory. Failing cases are written
to --failures (a folder) to be replayed.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import random
import resource
import signal
import struct
import sys
import tempfile
import time
import traceback
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from cnnc.diagnostics import CnncError  # noqa: E402

BACKEND_EVERY = 25  # one compiled model in this many (when small) is run on a backend
BACKEND_LIMIT = 16 << 20  # bytes: models estimated above this are not run (kept quick)


TORCH = False  # also run half of those models on the torch backend (set by main)


def _has_torch() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


class Hang(BaseException):
    pass


def _alarm(signum, frame):
    raise Hang


@dataclass
class Tally:
    cases: int = 0
    ok: int = 0
    diagnostics: int = 0
    internal: int = 0
    hangs: int = 0
    max_seconds: float = 0.0
    slowest: str = ""
    failures: list = field(default_factory=list)


WALL_TIMEOUT = 120.0  # seconds a case may wait without using CPU (a blocking read) before it hangs


def run_case(tally: Tally, label: str, payload, fn, timeout: float, failures: Path | None):
    """Run fn(); classify the outcome."""
    tally.cases += 1
    signal.setitimer(signal.ITIMER_PROF, timeout)
    signal.setitimer(signal.ITIMER_REAL, max(WALL_TIMEOUT, timeout))
    started = time.process_time()  # CPU seconds, all threads
    outcome, detail = "ok", ""
    try:
        outcome = fn() or "ok"
    except CnncError:
        outcome = "diagnostic"
    except Hang:
        outcome = "hang"
    except RecursionError as e:  # as any other exception: a bug
        outcome, detail = "internal", f"RecursionError: {e}"
    except Exception as e:  # noqa: BLE001 - every other exception is what we are counting
        outcome, detail = "internal", "".join(traceback.format_exception(e)[-6:])
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.setitimer(signal.ITIMER_REAL, 0)
    seconds = time.process_time() - started
    if seconds > tally.max_seconds:
        tally.max_seconds, tally.slowest = seconds, label
    if outcome == "ok":
        tally.ok += 1
    elif outcome == "diagnostic":
        tally.diagnostics += 1
    elif outcome == "hang":
        tally.hangs += 1
    else:
        tally.internal += 1
    if outcome in ("internal", "hang"):
        tally.failures.append((label, detail))
        if failures is not None:
            failures.mkdir(parents=True, exist_ok=True)
            n = len(list(failures.iterdir()))
            data = payload if isinstance(payload, bytes) else str(payload).encode("utf-8",
                                                                                  "replace")
            (failures / f"{n:05d}-{label.replace('/', '_')}").write_bytes(data)
            if detail:
                (failures / f"{n:05d}-{label.replace('/', '_')}.txt").write_text(detail)


# ---------------------------------------------------------------------------------------------
# Programs


NUMBERS = ["0", "1", "2", "3", "7", "-1", "2147483647", "2147483648", "1" + "0" * 5000,
           "1e308", "1e-320", "0.5", "1.0", "-0.0", "3x3", "0x0", "1x1", "28x28x1",
           "99999x99999", "2x3x4x5", "1e39", "nan", "inf", "0.999999"]
WORDS = ["relu", "softmax", "sigmoid", "same", "valid", "max", "avg", "global", "true",
         "false", "from", "here", "input", "x", "block", "train:", "add", "concat", "a", "b"]
TRAIN_SETTINGS = ["data digits", "epochs 2", "batch 16", "lr 0.01", "lr 0", "seed 3",
                  "optimizer sgd momentum=0.9 nesterov=true", "optimizer sgd nesterov=true",
                  "optimizer adam lr=1e-3", "loss bce", "loss mse", "val 0.2", "val 1",
                  "schedule cosine", "weight_decay 1e-4", "momentum -1"]


def _op_table():
    from cnnc import ops as registry

    registry.lookup("conv")  # loads the built-in ops
    ops = [s for name, s in sorted(registry._REGISTRY.items()) if name != "input"]
    return ops, list(registry.ACTIVATIONS)


def _value(rng: random.Random, arg) -> str:
    t = arg.type
    if rng.random() < 0.08:
        return rng.choice(NUMBERS + WORDS)
    if t == "int":
        return str(rng.choice([1, 2, 3, 4, 8, 16, 32, rng.randint(1, 64)]))
    if t == "float":
        return rng.choice(["0.1", "0.5", "0.01", "1e-5", "0.9", "2", "0"])
    if t == "size":
        return rng.choice(["1", "2", "3", "5", "3x3", "1x3", "7"])
    if t == "pad":
        return rng.choice(["same", "valid", "1", "0", "1x2", "1x1x2x2"])
    if t == "bool":
        return rng.choice(["true", "false"])
    if t == "enum":
        return rng.choice(list(arg.choices) or ["x"])
    if t == "dims":
        return rng.choice(["28x28x1", "8x8x3", "16", "4x4x2"])
    return rng.choice(WORDS)


def generate_program(rng: random.Random, ops, activations) -> str:
    """A random program from the op registry: mostly plausible, sometimes not."""
    lines = [f"input {rng.choice(['28x28x1', '8x8x3', '16x16x2', '32', '4x4x1', '1x1x1'])}"]
    names = ["input"]
    blocks = []
    if rng.random() < 0.15:
        body = []
        for _ in range(rng.randint(1, 3)):
            body.append(_statement(rng, ops, activations))
        params = rng.choice(["", "(c)", "(c, s=1)", "(c=8)"])
        lines = [f"block b{params}:"] + ["    " + s for s in body] + lines
        blocks.append("b")
    for i in range(rng.randint(1, 12)):
        r = rng.random()
        if r < 0.08 and len(names) > 1:
            merge = rng.choice(["add", "concat"])
            lines.append(f"{merge} {rng.choice(names)}, {rng.choice(names)}")
        elif r < 0.16:
            name = f"t{i}"
            names.append(name)
            lines.append(f"{name} = {_statement(rng, ops, activations)}")
        elif r < 0.2 and blocks:
            lines.append(f"b {rng.randint(1, 16)}" + (f" x{rng.randint(1, 4)}"
                                                     if rng.random() < 0.3 else ""))
        elif r < 0.24:
            lines.append(f"{_statement(rng, ops, activations)} from {rng.choice(names)}")
        else:
            lines.append(_statement(rng, ops, activations))
    if rng.random() < 0.5:
        lines += ["flatten", f"dense {rng.choice([1, 2, 10])} "
                  f"{rng.choice(['softmax', 'sigmoid', ''])}"]
    if rng.random() < 0.2:
        lines.append("train:")
        lines += ["    " + rng.choice(TRAIN_SETTINGS) for _ in range(rng.randint(1, 4))]
    sep = rng.choice(["\n", "\n", "; "]) if not any(l.endswith(":") for l in lines) else "\n"
    return sep.join(lines) + "\n"


def _statement(rng, ops, activations) -> str:
    schema = rng.choice(ops)
    words = [rng.choice([schema.name, *schema.aliases]) if schema.aliases else schema.name]
    for arg in schema.positional:
        if arg.required or rng.random() < 0.5:
            words.append(_value(rng, arg))
    for arg in schema.options:
        if rng.random() < 0.25:
            words.append(f"{arg.name}={_value(rng, arg)}")
    if rng.random() < 0.05:
        words.append(f"{rng.choice(WORDS)}={rng.choice(NUMBERS)}")
    return " ".join(words)


def mutate_tokens(rng: random.Random, text: str) -> str:
    import re

    tokens = re.findall(r"\s+|[A-Za-z_][A-Za-z_0-9.]*|[0-9][0-9a-z.+-]*|.", text)
    if not tokens:
        return text
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(tokens))
        r = rng.random()
        if r < 0.25:
            del tokens[i]
        elif r < 0.45:
            tokens.insert(i, tokens[rng.randrange(len(tokens))])
        elif r < 0.6 and len(tokens) > 1:
            j = rng.randrange(len(tokens))
            tokens[i], tokens[j] = tokens[j], tokens[i]
        elif r < 0.85:
            if tokens[i][:1].isdigit() or rng.random() < 0.3:
                tokens[i] = rng.choice(NUMBERS)
        else:
            tokens[i] = rng.choice(WORDS + ["(", ")", ",", "=", ":", "    ", "\t", "\n", "#",
                                            '"', "'"])
        if not tokens:
            return ""
    return "".join(tokens)


def mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        r = rng.random()
        if not b:
            b += bytes([rng.randrange(256)])
        elif r < 0.35:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif r < 0.55:
            b.insert(rng.randrange(len(b) + 1), rng.choice([0, 0xFF, 0xC3, 0x0A, 0x09, 0x5B,
                                                              0x22, rng.randrange(256)]))
        elif r < 0.7:
            del b[rng.randrange(len(b)):]
        elif r < 0.85:
            i = rng.randrange(len(b))
            b[i:i] = b[rng.randrange(len(b)):][:rng.randint(1, 200)]
        else:
            i = rng.randrange(len(b))
            del b[i:i + rng.randint(1, 20)]
    return bytes(b)


def seeds() -> list[str]:
    texts = []
    for folder in (ROOT / "examples", ROOT / "tests" / "diagnostics"):
        for path in sorted(folder.rglob("*.cnn")):
            try:
                texts.append(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError):
                pass
    return texts


def check_program(data: bytes, backend_rng: random.Random):
    from cnnc.pipeline import compile_text, decode_source

    text, diags = decode_source(data, "<fuzz>")
    if diags:
        return "diagnostic"
    model = compile_text(text, "<fuzz>")
    for d in model.diagnostics:  # every diagnostic must render, as the CLI would
        d.to_json()
    if not model.ok:
        from cnnc.diagnostics import render_text

        render_text(model.diagnostics, {"<fuzz>": text}, color=False)
        return "diagnostic"
    model.summary()
    from cnnc.analysis.memory import training

    need = training(model.graph, 2, "adam").total_bytes
    if need < BACKEND_LIMIT and backend_rng.random() < 1 / BACKEND_EVERY:
        backends = ["numpy"] + (["torch"] if TORCH and backend_rng.random() < 0.5 else [])
        for backend in backends:
            run_on_backend(model, backend)
    return "ok"


def run_on_backend(model, backend: str) -> None:
    """Predict one image, then one training step on a batch of two (batch norm, losses)."""
    from cnnc.train.config import TrainConfig

    options = {"device": "cpu", "channels_last": False} if backend == "torch" else {}
    session = model.to_backend(backend, seed=0, **options)
    rng = np.random.default_rng(0)
    x = rng.random((2, *model.input_shape), dtype=np.float32)
    with np.errstate(all="ignore"):
        session.predict(x[:1])
        if len(model.output_shape) == 1:  # a trainable output; plan_loss says why not otherwise
            classes = max(model.output_shape[0], 2)
            y = rng.integers(0, classes, 2)
            session.configure_optimizer(TrainConfig(optimizer="adam"))
            data = session.put(x, y)
            session.train_step(data, np.arange(2))


# ---------------------------------------------------------------------------------------------
# Files


def make_valid_files(folder: Path) -> dict[str, bytes]:
    """One small valid file of each format, and a run folder's files."""
    import cnnc
    from cnnc.data import Dataset
    from cnnc.train.checkpoint import save_safetensors
    from cnnc.train.config import TrainConfig
    from cnnc.train.engine import train

    files = {}
    rng = np.random.default_rng(0)
    model = cnnc.compile("input 4x4x1; conv 2 3 relu; bn; flatten; dense 3 softmax")
    session = model.to_backend("numpy", seed=0)
    ds = Dataset("fuzz", rng.random((24, 4, 4, 1), dtype=np.float32),
                 (np.arange(24) % 3).astype(np.int64),
                 rng.random((6, 4, 4, 1), dtype=np.float32), (np.arange(6) % 3).astype(np.int64),
                 3, "fuzz")
    run = folder / "run"
    train(model, session, ds, TrainConfig(epochs=2, batch_size=8, optimizer="adam"),
          out_dir=run, test=False)
    for name in ("state.safetensors", "last.safetensors", "metrics.jsonl"):
        files[name] = (run / name).read_bytes()
    save_safetensors(folder / "w.safetensors", {"a": np.arange(6, dtype=np.float32),
                                                "b": np.ones((2, 2), np.float16)},
                     {"k": "v"})
    files["weights"] = (folder / "w.safetensors").read_bytes()
    buf = io.BytesIO()
    np.savez(buf, x_train=rng.integers(0, 255, (8, 4, 4), dtype=np.uint8),
             y_train=np.arange(8) % 3, x_test=rng.integers(0, 255, (4, 4, 4), dtype=np.uint8),
             y_test=np.arange(4) % 3)
    files["npz"] = buf.getvalue()
    buf = io.BytesIO()
    np.savez_compressed(buf, x_train=rng.random((8, 4, 4), dtype=np.float32),
                        y_train=np.eye(3)[np.arange(8) % 3].astype(np.uint8),
                        x_test=rng.random((4, 4, 4), dtype=np.float32),
                        y_test=np.arange(4) % 3, num_classes=np.int64(3))
    files["npz_compressed"] = buf.getvalue()
    images = struct.pack(">IIII", 0x803, 5, 4, 4) + bytes(range(80))
    labels = struct.pack(">II", 0x801, 5) + bytes([0, 1, 2, 1, 0])
    files["idx_images"], files["idx_labels"] = images, labels
    files["idx_images_gz"] = gzip.compress(images)
    return files, model, ds


def mutate_structure(rng: random.Random, kind: str, data: bytes) -> bytes:
    """Edit a header field to an absurd value (the damage a byte flip rarely reaches)."""
    huge = rng.choice([2**31, 2**32 - 1, 2**63 - 1, 2**64 - 1, 10**30, 0, 1])
    if kind in ("weights", "state.safetensors", "last.safetensors") and len(data) >= 8:
        n = int.from_bytes(data[:8], "little")
        try:
            header = json.loads(data[8:8 + n])
        except ValueError:
            return data
        names = [k for k in header if k != "__metadata__"]
        r = rng.random()
        if r < 0.3 and names:
            e = header[rng.choice(names)]
            field_ = rng.choice(["shape", "data_offsets", "dtype"])
            e[field_] = rng.choice([[huge], [huge, huge], [0, huge], [-1, 3], "I32", "BOOL", "U8",
                                    "F64", "X9", None, [[]], {"a": 1}, [1.5]])
        elif r < 0.7 and "__metadata__" in header:
            meta = header["__metadata__"]
            key = rng.choice(list(meta) + ["next_epoch", "config", "history", "best_metric"])
            meta[key] = rng.choice(["abc", "", "0", "-1", str(huge), "nan", "[", "{}", "[]",
                                    json.dumps([{"epoch": 1}]), "1e999", "[" * 5000])
        elif names:
            del header[rng.choice(names)]
        text = json.dumps(header).encode()
        text += b" " * (-(8 + len(text)) % 8)
        return len(text).to_bytes(8, "little") + text + data[8 + n:]
    if kind.startswith("idx") and len(data) >= 12:
        b = bytearray(data if not kind.endswith("gz") else gzip.decompress(data))
        pos = rng.randrange(4, min(len(b), 16) - 3)
        b[pos:pos + 4] = struct.pack(">I", huge % 2**32)
        return gzip.compress(bytes(b)) if kind.endswith("gz") else bytes(b)
    if kind.startswith("npz"):
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                members = {i.filename: z.read(i) for i in z.infolist()}
        except (zipfile.BadZipFile, OSError, ValueError):
            return data
        name = rng.choice(list(members))
        m = members[name]
        r = rng.random()
        if r < 0.5 and m.startswith(b"\x93NUMPY"):
            m = m.replace(b"'shape': (", f"'shape': ({huge}, ".encode(), 1)
        elif r < 0.7:
            m = m.replace(b"'descr': '", b"'descr': '|O", 1)
        else:
            members[name + "x"] = members.pop(name)
        members[name if name in members else name + "x"] = m
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", compression=rng.choice([zipfile.ZIP_STORED,
                                                               zipfile.ZIP_DEFLATED])) as z:
            for k, v in members.items():
                z.writestr(k, v)
        return out.getvalue()
    if kind == "metrics.jsonl":
        lines = data.splitlines(keepends=True)
        i = rng.randrange(len(lines) + 1)
        lines.insert(i, rng.choice([b"garbage\n", b"[]\n", b"{\"epoch\": \"x\"}\n", b"\xff\n",
                                    b"[" * 10000 + b"\n", b"\n", b"null\n"]))
        return b"".join(lines)
    return data


def check_file(kind: str, data: bytes, folder: Path, valid: dict, model, ds):
    from cnnc.data.idx import IMAGE_MAGIC, LABEL_MAGIC, read_idx
    from cnnc.data.npz import load_npz_file
    from cnnc.train.checkpoint import load_safetensors

    if kind in ("weights", "last.safetensors"):
        path = folder / "case.safetensors"
        path.write_bytes(data)
        tensors, _ = load_safetensors(path)
        if kind == "last.safetensors":  # as `cnnc eval` would: into the model
            model.to_backend("numpy", seed=0).set_weights(tensors, str(path))
        return "ok"
    if kind.startswith("npz"):
        path = folder / "case.npz"
        path.write_bytes(data)
        load_npz_file(str(path))
        return "ok"
    if kind.startswith("idx"):
        path = folder / ("case-idx" + (".gz" if kind.endswith("gz") else ""))
        path.write_bytes(data)
        read_idx(path, LABEL_MAGIC if kind == "idx_labels" else IMAGE_MAGIC)
        return "ok"
    # a run folder with one damaged file, resumed by the engine
    from cnnc.train.config import TrainConfig
    from cnnc.train.engine import train

    run = folder / "resume"
    run.mkdir(exist_ok=True)
    for name in ("state.safetensors", "last.safetensors", "metrics.jsonl"):
        (run / name).write_bytes(data if name == kind else valid[name])
    session = model.to_backend("numpy", seed=0)
    with np.errstate(all="ignore"):
        train(model, session, ds, TrainConfig(epochs=3, batch_size=8, optimizer="adam"),
              out_dir=run, resume=True, test=False)
    return "ok"


# ---------------------------------------------------------------------------------------------


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--programs", type=int, default=2000)
    ap.add_argument("--files", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=10.0,
                    help="CPU seconds before a case hangs")
    ap.add_argument("--wall-timeout", type=float, default=120.0,
                    help="seconds a case may wait (using no CPU) before it hangs")
    ap.add_argument("--failures", type=Path, default=None,
                    help="write internal errors and hangs here")
    ap.add_argument("--no-torch", action="store_true",
                    help="run compiled models on the NumPy backend only")
    args = ap.parse_args(argv)
    global TORCH, WALL_TIMEOUT
    TORCH = not args.no_torch and _has_torch()
    if TORCH:  # pay torch's import and first-use costs here, not in the first case's time
        import cnnc

        run_on_backend(cnnc.compile("input 4x4x1; conv 2 3; bn; flatten; dense 3"), "torch")
    WALL_TIMEOUT = args.wall_timeout
    signal.signal(signal.SIGALRM, _alarm)
    signal.signal(signal.SIGPROF, _alarm)
    rng = random.Random(args.seed)
    backend_rng = random.Random(args.seed + 1)
    started = time.perf_counter()
    tallies: dict[str, Tally] = {}
    peaks: dict[str, float] = {}

    ops, activations = _op_table()
    corpus = seeds()
    kinds = ["generated", "token-mutated", "byte-mutated"]
    for i in range(args.programs):
        kind = kinds[i % 3]
        if kind == "generated":
            data = generate_program(rng, ops, activations).encode()
        elif kind == "token-mutated":
            base = rng.choice(corpus) if rng.random() < 0.6 else \
                generate_program(rng, ops, activations)
            data = mutate_tokens(rng, base).encode("utf-8", "surrogatepass")
        else:
            base = rng.choice(corpus) if rng.random() < 0.6 else \
                generate_program(rng, ops, activations)
            data = mutate_bytes(rng, base.encode())
        if i and i % 10000 == 0:
            print(f"... {i:,} programs, {time.perf_counter() - started:.0f} s", file=sys.stderr,
                  flush=True)
        tally = tallies.setdefault(f"program, {kind}", Tally())
        run_case(tally, f"program-{kind}-{i}", data,
                 lambda data=data: check_program(data, backend_rng), args.timeout,
                 args.failures)
        peaks[f"program, {kind}"] = peak_mib()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        valid, model, ds = make_valid_files(folder)
        names = sorted(valid)
        for i in range(args.files):
            kind = names[i % len(names)]
            data = valid[kind]
            how = "structure" if rng.random() < 0.4 else "bytes"
            data = mutate_structure(rng, kind, data) if how == "structure" else \
                mutate_bytes(rng, data)
            label = f"file, {kind}"
            tally = tallies.setdefault(label, Tally())
            run_case(tally, f"file-{kind}-{how}-{i}", data,
                     lambda kind=kind, data=data: check_file(kind, data, folder, valid, model,
                                                             ds),
                     args.timeout, args.failures)
            peaks[label] = peak_mib()

    print(f"cnnc fuzz: seed {args.seed}, {args.programs:,} programs, {args.files:,} damaged "
          f"files, timeout {args.timeout:g} CPU s, {time.perf_counter() - started:.0f} s in all\n")
    header = (f"{'kind':<28}{'cases':>9}{'ok':>8}{'diagnostics':>13}{'internal errors':>17}"
              f"{'hangs':>7}{'max CPU':>10}{'max memory':>12}")
    print(header)
    print("-" * len(header))
    total = Tally()
    for label, t in tallies.items():
        print(f"{label:<28}{t.cases:>9,}{t.ok:>8,}{t.diagnostics:>13,}{t.internal:>17,}"
              f"{t.hangs:>7,}{t.max_seconds:>9.2f}s{peaks[label]:>9.0f} MiB")
        for name in ("cases", "ok", "diagnostics", "internal", "hangs"):
            setattr(total, name, getattr(total, name) + getattr(t, name))
        total.max_seconds = max(total.max_seconds, t.max_seconds)
        total.failures += t.failures
    print("-" * len(header))
    print(f"{'all':<28}{total.cases:>9,}{total.ok:>8,}{total.diagnostics:>13,}"
          f"{total.internal:>17,}{total.hangs:>7,}{total.max_seconds:>9.2f}s"
          f"{peak_mib():>9.0f} MiB")
    print("\nmax memory: the process's peak resident memory after that kind's cases "
          "(cumulative, in-process)")
    for label, detail in total.failures[:20]:
        print(f"\n{label}:\n{detail}")
    return 1 if (total.internal or total.hangs) else 0


if __name__ == "__main__":
    sys.exit(main())
