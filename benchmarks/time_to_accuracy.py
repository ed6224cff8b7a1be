"""Seconds to a Fashion-MNIST test accuracy (0.93): `cnnc train`, the same recipe written by hand in
PyTorch, and the seeds' Keras recipe, side by side in one run.

    python benchmarks/time_to_accuracy.py [--target 0.93] [--device auto|cpu|cuda]
        [--keras-epochs 24] [--only cnnc,torch,keras] [--model examples/fashion_fast.cnn]
        [--seeds 0,1,2] [--init shared|own] [--stop-at-target]
        [--data DIR] [--threads N] [--quick] [--json FILE]

Contenders, each a process of its own, started one after the other:

* cnnc: `cnnc train MODEL --backend torch --test-each-epoch`, as a user types it: the model
  file's `train:` section is the recipe (batch, optimizer, learning rate, schedule, epochs);
  precision and memory layout are cnnc's automatic choices. MODEL is examples/fashion_fast.cnn
  unless --model says otherwise: three small convolution stages with random flips over 18
  epochs, the cheapest recipe measured to reach 0.93 on every seed tried (at epochs 8 to 14).
  examples/fashion_bn.cnn (2.1x its work per image, 15 epochs, 0.9352 in bf16) reaches 0.93
  as well, later.
* hand-written PyTorch: benchmarks/fashion_fast_torch.py, the same model, batch, optimizer,
  schedule and epochs, in the precision cnnc chose, with channels_last and the data as tensors in
  memory (the best a careful person would write; its docstring says what that means).
* the seeds' Keras recipe: benchmarks/fashion_seed_keras.py, the tutorials' two-convolution
  model with Adam at 1e-3 and `model.fit`'s defaults (batch 32), on Keras 3's PyTorch backend
  (TensorFlow is not needed), run for at most --keras-epochs epochs.

What is counted: the wall time from launching the process (Python's start, the imports, reading
the four IDX files, building the model, cnnc's one-off precision and layout measurements) to
the end of the first epoch after which the test accuracy is at least the target. All three score
the test split after every epoch to know when that is; that scoring's time is measured by each
and taken out. "startup" is the part before the first training step.

Seeds and initial weights. Near the target the test accuracy wanders by a few tenths of a point
from epoch to epoch, so with one seed the epoch that first crosses it is partly luck: one run
measured cnnc and the script at the same speed per epoch, and cnnc crossing 0.93 two epochs
later. So cnnc and the script run once per seed in --seeds (alternating, so that a change in the
machine's load falls on both), and the summary compares their medians. With --init shared (the
default) each seed's pair starts from the same weights: the script writes PyTorch's default
initialisation for that seed to a safetensors file (`fashion_fast_torch.py --save-init`), cnnc
loads it with `cnnc train --init FILE` and the script with --init; what is left to differ is
the speed and the random draws of the run (batch order, dropout). --init own lets each
initialise as it would alone (cnnc's initialisers against PyTorch's defaults).
--stop-at-target ends a run after the epoch that reaches the target (by SIGTERM, which cnnc
handles as Ctrl-C, after the epoch's files are written), which makes several seeds affordable.

A contender that never reaches the target is reported with its best accuracy and when it got
there; a ratio to a target it did not reach is a lower bound ("at least"), taken from the time it
ran without reaching it. The machine's load average is printed before and after: the figures
are only as quiet as the machine was, and ratios from one run are what to compare.

--quick: one epoch on 6,000 training images per contender, to try the script (no figures).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

DEFAULT_MODEL = os.path.join(ROOT, "examples", "fashion_fast.cnn")  # measured to reach 0.93
QUICK_LIMIT = 6000
HAND_WRITTEN = ("fashion_fast", "fashion_bn")  # the models fashion_fast_torch.py writes out


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", type=float, default=0.93, help="test accuracy to reach")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                    help="auto takes CUDA when there is a GPU")
    ap.add_argument("--keras-epochs", type=int, default=24,
                    help="the most epochs the seeds' Keras recipe runs (it may never reach the "
                         "target: its best is 0.9231 after epoch 11, then it overfits; 24 "
                         "epochs make the lower bound cover several times cnnc's time)")
    ap.add_argument("--only", default="cnnc,torch,keras",
                    help="which contenders, comma-separated: cnnc, torch, keras")
    ap.add_argument("--model", default=DEFAULT_MODEL,
                    help="cnnc's model file (its train: section is the recipe)")
    ap.add_argument("--seeds", default=None,
                    help="comma-separated seeds for cnnc and the hand-written script, run in "
                         "turn (default: the model file's seed)")
    ap.add_argument("--init", default="shared", choices=["shared", "own"],
                    help="shared: each seed's cnnc and hand-written runs start from the same "
                         "weights (PyTorch's default initialisation); own: each its own")
    ap.add_argument("--stop-at-target", action="store_true",
                    help="end each run after the epoch that reaches the target")
    ap.add_argument("--data", default=None,
                    help="the folder of Fashion-MNIST's IDX files (default: where cnnc finds "
                         "them, downloading them if it must)")
    ap.add_argument("--threads", type=int, default=None,
                    help="OMP_NUM_THREADS for every contender (default: torch's own choice); "
                         "on a machine with more busy threads than cores, 1 wastes less")
    ap.add_argument("--quick", action="store_true",
                    help=f"one epoch on {QUICK_LIMIT:,} training images each: a trial run")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = ap.parse_args(argv)
    args.only = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = set(args.only) - {"cnnc", "torch", "keras"}
    if unknown:
        ap.error(f"--only: unknown contender(s) {', '.join(sorted(unknown))}")
    try:
        args.seeds = [int(v) for v in args.seeds.split(",")] if args.seeds else None
    except ValueError:
        ap.error(f"--seeds: {args.seeds!r} is not a comma-separated list of integers")
    return args


# -- what is compared -----------------------------------------------------------------------------


def resolve_device(choice: str) -> str:
    import torch

    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        sys.exit("time_to_accuracy: --device cuda, but torch sees no CUDA device")
    return choice


def data_folder(given: str | None) -> str:
    """A folder holding Fashion-MNIST's four IDX files: --data, else where cnnc looks (and
    downloads them to when they are nowhere)."""
    from cnnc.data.idx import find_files, search_folders

    if given:
        if find_files(__import__("pathlib").Path(given))[0] is None:
            sys.exit(f"time_to_accuracy: {given} does not hold Fashion-MNIST's four IDX files")
        return given
    for attempt in range(2):
        for folder, _ in search_folders("fashion-mnist"):
            if folder.is_dir() and find_files(folder)[0] is not None:
                return str(folder)
        if attempt == 0:  # nowhere: let cnnc fetch it (or explain why it cannot)
            from cnnc.data import load_dataset
            from cnnc.diagnostics import CnncError

            try:
                load_dataset("fashion-mnist")
            except CnncError as e:
                sys.exit(f"time_to_accuracy: {e.message}")
    sys.exit("time_to_accuracy: Fashion-MNIST's IDX files were not found")


def read_recipe(path: str):
    """The model file's training settings and trainable parameter count; refuses a recipe the
    hand-written script does not implement."""
    import cnnc

    model = cnnc.compile(path)
    config = model.train_config
    if config is None:
        sys.exit(f"time_to_accuracy: {path} has no train: section (the recipe)")
    wrong = []
    stem = os.path.splitext(os.path.basename(path))[0]
    if stem not in HAND_WRITTEN:
        wrong.append(f"there is a hand-written version of {' and '.join(HAND_WRITTEN)} only")
    if config.optimizer != "adam" or config.weight_decay:
        wrong.append("the optimizer is not plain adam")
    if config.val_split:
        wrong.append("a validation split is held out (the recipe trains on all 60,000 images)")
    if config.shift or config.erase:
        wrong.append("it shifts or erases (the script implements flip only)")
    if wrong:
        sys.exit(f"time_to_accuracy: {path}: the hand-written script does not implement this "
                 f"recipe: {'; '.join(wrong)}")
    return model, config


# -- running a contender --------------------------------------------------------------------------


@dataclass
class Run:
    name: str
    recipe: str
    command: list[str]
    epochs: list[dict] = field(default_factory=list)  # epoch, test_accuracy, at (s), ...
    stamps: list[float] = field(default_factory=list)  # when each epoch's line arrived
    lines: list[str] = field(default_factory=list)
    seconds: float = 0.0  # the whole process
    returncode: int | None = None
    parameters: int | None = None
    startup: float | None = None  # before the first training step
    note: str = ""
    seed: int | None = None
    stopped: bool = False  # ended at the target by --stop-at-target

    def time_to(self, accuracy: float) -> float | None:
        for e in self.epochs:
            if e["test_accuracy"] >= accuracy:
                return e["at"]
        return None

    def best(self) -> dict | None:
        return max(self.epochs, key=lambda e: e["test_accuracy"]) if self.epochs else None

    @property
    def ran_for(self) -> float | None:
        """Training time counted up to the last epoch it ran (evaluations left out)."""
        return self.epochs[-1]["at"] if self.epochs else None


def launch(run: Run, env: dict, epoch_accuracy, stop_at: float | None = None) -> None:
    """Run the contender, stamping each line that ends an epoch as it arrives
    (`epoch_accuracy(line)`: the epoch's test accuracy, None for other lines); with `stop_at`,
    send SIGTERM once an epoch reaches that accuracy."""
    print(f"\n[{run.name}{'' if run.seed is None else f', seed {run.seed}'}] "
          f"{' '.join(_short(w) for w in run.command)}", flush=True)
    started = time.perf_counter()
    proc = subprocess.Popen(run.command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    for line in proc.stdout:
        now = time.perf_counter() - started
        line = line.rstrip("\n")
        run.lines.append(line)
        accuracy = epoch_accuracy(line)
        if accuracy is not None:
            run.stamps.append(now)
            print(f"  {now:8.1f}s  {line}", flush=True)
            if stop_at is not None and accuracy >= stop_at and not run.stopped:
                run.stopped = True
                proc.send_signal(signal.SIGTERM)
    run.returncode = proc.wait()
    if run.stopped:
        run.returncode = 0  # ended on purpose
    run.seconds = time.perf_counter() - started
    if run.returncode != 0:
        print("\n".join(f"  | {line}" for line in run.lines[-15:]), flush=True)


def _short(word: str) -> str:
    return os.path.relpath(word, ROOT) if os.path.isabs(word) and word.startswith(ROOT) else word


def finish(run: Run, records: list[dict]) -> None:
    """Per-epoch figures from the contender's records and the stamps: `at` is the arrival of
    the epoch's line less all test scoring so far; `startup` the time before training began."""
    scoring = 0.0
    for stamp, r in zip(run.stamps, records):
        scoring += r["test_seconds"]
        run.epochs.append({"epoch": r["epoch"], "test_accuracy": r["test_accuracy"],
                           "train_seconds": r["train_seconds"], "at": stamp - scoring})
    if run.epochs:
        first = run.epochs[0]
        run.startup = first["at"] - first["train_seconds"]


def json_lines(run: Run) -> list[dict]:
    out = []
    for line in run.lines:
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def _cnnc_accuracy(line: str) -> float | None:
    """The test accuracy on cnnc's epoch line ("epoch 3/15 ... test_acc 0.9025 ...")."""
    if not line.startswith("epoch "):
        return None
    words = line.split()
    return float(words[words.index("test_acc") + 1]) if "test_acc" in words else None


def _json_accuracy(line: str) -> float | None:
    """The test accuracy on the scripts' epoch lines ({"epoch": 3, ..., "test_accuracy": ...})."""
    if not line.startswith('{"epoch"'):
        return None
    try:
        return float(json.loads(line)["test_accuracy"])
    except (ValueError, KeyError):
        return None


def write_init(args, seed: int, workdir: str) -> str:
    """PyTorch's default initial weights of the hand-written model for `seed`, as safetensors:
    the starting point of both contenders under --init shared."""
    path = os.path.join(workdir, f"init-{seed}.safetensors")
    name = os.path.splitext(os.path.basename(args.model))[0]
    subprocess.run([sys.executable, os.path.join(HERE, "fashion_fast_torch.py"),
                    "--model", name, "--seed", str(seed), "--save-init", path], check=True)
    return path


def run_cnnc(args, model_path, device, data, workdir, seed, init) -> tuple[Run, str | None]:
    out = os.path.join(workdir, f"cnnc-{seed}")
    command = [sys.executable, "-m", "cnnc", "train", model_path, "--backend", "torch",
               "--device", device, "--data", data, "--test-each-epoch", "--out", out,
               "--overwrite", "--seed", str(seed)]
    if init:
        command += ["--init", init]
    if args.quick:
        command += ["--epochs", "1", "--limit", str(QUICK_LIMIT)]
    run = Run("cnnc", "", command, seed=seed)
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "NO_COLOR": "1"}
    # SIGTERM stops cnnc as Ctrl-C does, after the epoch's files (metrics.jsonl) are written;
    # not SIGINT itself, which a shell's background job (`... &`) starts out ignoring
    launch(run, env, _cnnc_accuracy, args.target if args.stop_at_target else None)
    precision = None
    for line in run.lines:
        if line.startswith("precision: "):
            precision = line.split()[1]
            run.note = line[len("precision: "):]
    metrics = os.path.join(out, "metrics.jsonl")
    records = []
    if os.path.exists(metrics):
        with open(metrics, encoding="utf-8") as f:
            records = [r for r in map(json.loads, f) if "train_loss" in r]
    for r in records:
        r["train_seconds"] = r["seconds"]
    finish(run, records)
    import cnnc

    run.parameters = cnnc.compile(model_path).summary().trainable_params
    return run, precision


def run_torch(args, config, precision, device, data, seed, init) -> Run:
    epochs = 1 if args.quick else config.epochs
    name = os.path.splitext(os.path.basename(args.model))[0]
    command = [sys.executable, os.path.join(HERE, "fashion_fast_torch.py"), "--data", data,
               "--model", name,
               "--epochs", str(epochs), "--batch", str(config.batch_size), "--lr",
               repr(config.lr), "--schedule", config.schedule, "--precision", precision,
               "--device", device, "--seed", str(seed)]
    if config.flip:
        command.append("--flip")
    if init:
        command += ["--init", init]
    if args.quick:
        command += ["--limit", str(QUICK_LIMIT)]
    run = Run("hand-written PyTorch", "", command, seed=seed)
    launch(run, dict(os.environ), _json_accuracy, args.target if args.stop_at_target else None)
    records = json_lines(run)
    run.parameters = next((r["parameters"] for r in records if "parameters" in r), None)
    finish(run, [r for r in records if "epoch" in r])
    return run


def run_keras(args, device, data) -> Run:
    epochs = 1 if args.quick else args.keras_epochs
    command = [sys.executable, os.path.join(HERE, "fashion_seed_keras.py"), "--data", data,
               "--epochs", str(epochs)]
    if args.quick:
        command += ["--limit", str(QUICK_LIMIT)]
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # Keras's torch backend takes a GPU when it sees one
    run = Run("seeds' Keras recipe", "", command)
    launch(run, env, _json_accuracy, args.target if args.stop_at_target else None)
    records = json_lines(run)
    run.parameters = next((r["parameters"] for r in records if "parameters" in r), None)
    version = next((r for r in records if "keras" in r), None)
    if version:
        run.note = f"Keras {version['keras']} on its {version['backend']} backend"
    finish(run, [r for r in records if "epoch" in r])
    return run


# -- the report -----------------------------------------------------------------------------------


def environment(device: str) -> list[str]:
    import torch

    cpu = platform.processor() or platform.machine()
    flags = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name") and cpu in ("", platform.machine()):
                    cpu = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    isa = [f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    lines = [f"date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
             f"python {platform.python_version()}, torch {torch.__version__} "
             f"({torch.get_num_threads()} threads), {platform.system()} {platform.machine()}",
             f"cpu: {cpu}, {os.cpu_count()} logical cores"
             + (f", {' '.join(isa)}" if isa else "")]
    if device == "cuda":
        lines.append(f"gpu: {torch.cuda.get_device_name()}")
    lines.append(f"device: {device}")
    return lines


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def _epochs(n: int) -> str:
    return f"{n} epoch{'s' * (n != 1)}"


def fmt_seconds(value) -> str:
    return "-" if value is None else f"{value:,.1f}"


def median_time(runs: list[Run], target: float) -> float | None:
    """The median over runs of the seconds to `target` (a run that never got there counts as
    slower than any that did); None when the median run did not get there."""
    times = sorted(t if (t := r.time_to(target)) is not None else math.inf for r in runs)
    if not times:
        return None
    middle = statistics.median_low(times) if len(times) % 2 else statistics.median(times)
    return None if math.isinf(middle) else middle


def report(runs: list[Run], target: float) -> list[str]:
    lines = ["| contender | seed | recipe | epochs run | best test accuracy (epoch) | startup s | "
             f"seconds to {target:g} | vs cnnc |",
             "|---|---:|---|---:|---|---:|---:|---:|"]
    cnncs = [r for r in runs if r.name == "cnnc"]
    hands = [r for r in runs if r.name.startswith("hand-written")]
    keras = next((r for r in runs if r.name.startswith("seeds'")), None)
    base = median_time(cnncs, target)  # what Keras is compared with

    def partner(r: Run) -> Run | None:
        return next((c for c in cnncs if c.seed == r.seed), None)

    for r in runs:
        best = r.best()
        reached = r.time_to(target)
        if r.name == "cnnc":
            ref = None
        elif r is keras:
            ref = base
        else:  # the hand-written script against cnnc's run of the same seed
            ref = c.time_to(target) if (c := partner(r)) else None
        if reached is not None:
            shown = fmt_seconds(reached)
            ratio = ("1.00x" if r.name == "cnnc" else f"{reached / ref:.2f}x" if ref else "")
        elif r.epochs:
            shown = f"not reached (> {fmt_seconds(r.ran_for)})"
            ratio = f"> {r.ran_for / ref:.2f}x" if ref and r.name != "cnnc" else ""
        else:
            shown, ratio = f"failed (exit {r.returncode})", ""
        accuracy = f"{best['test_accuracy']:.4f} ({best['epoch']})" if best else "-"
        seed = "-" if r.seed is None else str(r.seed)
        lines.append(f"| {r.name} | {seed} | {r.recipe} | {len(r.epochs)} | {accuracy} | "
                     f"{fmt_seconds(r.startup)} | {shown} | {ratio} |")
    notes = []
    pairs = [(c, h) for h in hands if (c := partner(h)) and c.epochs and h.epochs]
    if pairs:
        # speed per epoch over the epochs each ran (the part of the race that is not luck)
        ce = [e["train_seconds"] for c, _ in pairs for e in c.epochs]
        he = [e["train_seconds"] for _, h in pairs for e in h.epochs]
        mc, mh = statistics.fmean(ce), statistics.fmean(he)
        notes.append(f"training time an epoch: cnnc {mc:,.1f} s ({len(ce)} epochs), "
                     f"hand-written {mh:,.1f} s ({len(he)} epochs): cnnc takes {mc / mh:.2f}x "
                     f"the hand-written script's time ({mh / mc:.2f}x its speed)")
        for c, h in pairs:
            if not c.stopped and not h.stopped and len(c.epochs) == len(h.epochs):
                seed = "" if c.seed is None else f" (seed {c.seed})"
                notes.append(f"the same recipe, all {_epochs(len(c.epochs))}{seed}: cnnc "
                             f"{c.ran_for:,.1f} s, hand-written {h.ran_for:,.1f} s: cnnc takes "
                             f"{c.ran_for / h.ran_for:.2f}x the hand-written script's time "
                             f"({h.ran_for / c.ran_for:.2f}x its speed)")
        if len(pairs) > 1:
            mc2, mh2 = median_time([c for c, _ in pairs], target), \
                median_time([h for _, h in pairs], target)
            seeds = ", ".join(str(c.seed) for c, _ in pairs)
            each = "; ".join(f"seed {c.seed}: {fmt_seconds(c.time_to(target))} against "
                             f"{fmt_seconds(h.time_to(target))}" for c, h in pairs)
            if mc2 is not None and mh2 is not None:
                notes.append(f"median seconds to {target:g} over seeds {seeds}: cnnc "
                             f"{mc2:,.1f}, hand-written {mh2:,.1f}: cnnc takes {mc2 / mh2:.2f}x "
                             f"the hand-written script's time ({each})")
            else:
                notes.append(f"the median run of cnnc or of the hand-written script did not "
                             f"reach {target:g} ({each})")
        for c, h in pairs:
            if c.parameters != h.parameters:
                notes.append(f"WARNING: cnnc's model has {c.parameters:,} trainable parameters, "
                             f"the hand-written one {h.parameters}: not the same model")
                break
    if cnncs and keras and keras.epochs and any(c.epochs for c in cnncs):
        kbest = keras.best()
        if keras.time_to(target) is None and base:
            notes.append(f"the seeds' Keras recipe did not reach {target:g} in "
                         f"{_epochs(len(keras.epochs))} ({keras.ran_for:,.1f} s); its best, "
                         f"{kbest['test_accuracy']:.4f}, came after epoch {kbest['epoch']}. "
                         f"So cnnc reaches {target:g} at least {keras.ran_for / base:.2f}x "
                         "faster than it (a lower bound: it may never get there)")
        level = kbest["test_accuracy"]
        tk, tc = keras.time_to(level), median_time(cnncs, level)
        if tc is not None:
            notes.append(f"to the seeds' best accuracy, {level:.4f}: Keras {tk:,.1f} s, cnnc "
                         f"{tc:,.1f} s: cnnc {tk / tc:.2f}x faster")
        else:
            notes.append(f"cnnc did not reach the seeds' best accuracy, {level:.4f} (Keras: "
                         f"{tk:,.1f} s)")
    return lines + [""] + [f"- {n}" for n in notes]


def precision_rule(device: str) -> str:
    """cnnc's `precision auto` rule, for the script when cnnc did not run."""
    import torch

    from cnnc.backends.torch.session import bf16_speedup

    fast = (torch.cuda.is_bf16_supported() if device == "cuda"
            else bf16_speedup(torch.device(device)) >= 1.5)
    return "bf16" if fast else "fp32"


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:  # the contenders inherit it
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    device = resolve_device(args.device)
    data = data_folder(args.data)
    model, config = read_recipe(args.model)
    print("time to accuracy on Fashion-MNIST" + (" (--quick: a trial, not a measurement)"
                                                 if args.quick else ""))
    for line in environment(device):
        print(line)
    load_before = load_average()
    print(f"load average before: {load_before}")
    epochs = 1 if args.quick else config.epochs
    recipe = (f"{os.path.basename(args.model)}, {model.summary().trainable_params:,} params, "
              f"batch {config.batch_size}, adam {config.lr:g} {config.schedule}, "
              f"{_epochs(epochs)}")
    if config.flip:
        recipe += ", flip"
    seeds = args.seeds or [config.seed]
    shared = args.init == "shared" and "cnnc" in args.only and "torch" in args.only
    print(f"seeds: {', '.join(map(str, seeds))}; initial weights: "
          + ("the same for cnnc and the hand-written script (PyTorch's defaults for the seed)"
             if shared else "each contender's own"))
    runs: list[Run] = []
    precision = None
    with tempfile.TemporaryDirectory(prefix="tta-") as workdir:
        for seed in seeds:  # cnnc and the script in turn, so that load drift falls on both
            init = write_init(args, seed, workdir) if shared else None
            if "cnnc" in args.only:
                run, chose = run_cnnc(args, args.model, device, data, workdir, seed, init)
                precision = precision or chose
                run.recipe = recipe + f", {(chose or '?')} (auto)"
                runs.append(run)
            if "torch" in args.only:
                if precision not in ("bf16", "fp32"):  # cnnc did not run (or chose fp16)
                    precision = precision_rule(device)
                run = run_torch(args, config, precision, device, data, seed, init)
                run.recipe = recipe + f", {precision}, channels_last"
                runs.append(run)
    if "keras" in args.only:
        run = run_keras(args, device, data)
        cap = 1 if args.quick else args.keras_epochs
        run.recipe = (f"Conv32-Pool-Conv64-Pool-Dense128, {run.parameters or 0:,} params, "
                      f"batch 32, adam 1e-3 constant, fp32, up to {_epochs(cap)}")
        runs.append(run)
    load_after = load_average()
    print()
    for line in environment(device):
        print(line)
    for r in runs:
        if r.note:  # one line a run: the precision probe's reading differs from run to run
            seed = f" (seed {r.seed})" if r.seed is not None and len(seeds) > 1 else ""
            print(f"{r.name}{seed}: {r.note}")
    print(f"load average before: {load_before}; after: {load_after}")
    print("counted: from launching each process to the end of the epoch that first reaches "
          "the target, less the test scoring after each epoch")
    print()
    table = report(runs, args.target)
    print("\n".join(table))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"target": args.target, "device": device, "quick": args.quick,
                       "environment": environment(device), "load_before": load_before,
                       "load_after": load_after,
                       "seeds": seeds, "init": "shared" if shared else "own",
                       "runs": [{"name": r.name, "seed": r.seed, "stopped": r.stopped,
                                 "recipe": r.recipe, "seconds": r.seconds,
                                 "returncode": r.returncode, "parameters": r.parameters,
                                 "startup": r.startup, "epochs": r.epochs,
                                 "note": r.note} for r in runs]}, f, indent=1)
    return 0 if all(r.returncode == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
