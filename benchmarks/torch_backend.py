"""Training speed: cnnc's torch session against a hand-written PyTorch loop and Keras 3.

    python benchmarks/torch_backend.py [--device auto|cpu|cuda] [--batch 64] [--steps 20]
                                       [--rounds 15] [--threads N] [--no-keras] [--compile]

Model (the seeds' two-convolution model, Fashion-MNIST shapes: 28x28x1, 10 classes):

    conv 32 3x3 same relu / pool 2 / conv 64 3x3 same relu / pool 2 / flatten /
    dense 128 relu / dense 10, softmax cross-entropy, Adam (lr 1e-3)

Contenders, all in this process with the same threads, the same data held on the device and
the same random batches:

* cnnc auto: `cnnc.compile(...).to_backend("torch", precision="auto")`, what `cnnc train`
  runs: it measures whether bfloat16 pays on this device (bf16 autocast, fp32 weights) and
  times both memory layouts at its first step. Driven through `session.train_step` as the
  training engine drives it (the loss and correct count read back once per round);
* cnnc fp32 in the automatic layout and in each layout;
* hand-written: nn.Sequential of the same layers + torch.optim.Adam (foreach on the CPU, fused
  on a GPU: the implementation cnnc uses, as a careful person would choose), the loop everyone
  writes (index a batch, forward, cross_entropy, zero_grad, backward, step, count correct), in
  float32 and under bfloat16 autocast, each in both memory layouts (contiguous N x C x H x W and
  channels_last); the faster layout of each precision is "best hand-written fp32" and
  "best hand-written bf16";
* Keras 3 with KERAS_BACKEND=torch, `model.fit` on the same images (when keras is installed).

Rounds alternate between the contenders so that machine noise hits all alike; we report the
median round of each, and the training FLOP/s (3 x forward MACs x 2 per image, MACs from cnnc's
summary) as a fraction of this machine's measured matmul rate of the contender's precision.
The ratios the project's goals are about are printed last; the environment (versions, CPU and
its bfloat16 instructions, threads) first.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cnnc  # noqa: E402
from cnnc.train.config import TrainConfig  # noqa: E402

MODEL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                  "examples", "fashion_cnn.cnn")  # the seeds' two-convolution model
LR = 1e-3


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                    help="auto (CUDA when available), cpu, cuda")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=None,
                    help="training steps per timed round (default 20 on CPU, 300 on CUDA)")
    ap.add_argument("--rounds", type=int, default=15, help="timed rounds per contender")
    ap.add_argument("--warmup", type=int, default=None,
                    help="untimed steps per contender first (default 5 on CPU, 50 on CUDA)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--images", type=int, default=8192, help="images held on the device")
    ap.add_argument("--no-keras", action="store_true", help="skip Keras 3")
    ap.add_argument("--compile", action="store_true",
                    help="also time cnnc with torch.compile (compiling takes a minute or more)")
    return ap.parse_args(argv)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- the contenders: each is (name, step(idx) -> None, finish() -> None) -------------------------


def cnnc_contender(model, x, y, device, channels_last, name, compile=False,
                   precision="fp32"):
    session = model.to_backend("torch", seed=0, device=str(device), channels_last=channels_last,
                               compile=compile, precision=precision)
    session.configure_optimizer(TrainConfig(optimizer="adam", lr=LR))
    data = session.put(x, y)
    pending = []

    def step(idx):
        pending.append(session.train_step(data, idx))

    def finish():  # the engine reads the figures back in bulk, as here once per round
        total = sum(float(loss) + int(correct) for loss, correct in pending)
        pending.clear()
        return total

    return name, step, finish, session


def handwritten_contender(x, y, device, channels_last: bool, precision: str):
    """The loop a careful person writes: data on the device, the chosen layout, autocast in
    the chosen precision (fp16 with a gradient scaler), Adam's foreach/fused implementation."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10)).to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=fmt)
    fast = {"fused": True} if device.type == "cuda" else {"foreach": True}
    opt = torch.optim.Adam(net.parameters(), lr=LR, **fast)
    amp = precision in ("bf16", "fp16")
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous().to(device)
    yt = torch.from_numpy(y).to(device)
    pending = []

    def step(idx):
        i = torch.from_numpy(idx).to(device)
        xb = xt.index_select(0, i).contiguous(memory_format=fmt)
        yb = yt.index_select(0, i)
        with torch.autocast(device.type, dtype=dtype, enabled=amp):
            out = net(xb)
        loss = F.cross_entropy(out.float(), yb)
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        pending.append((loss.detach(), (out.argmax(1) == yb).sum()))

    def finish():
        total = sum(float(loss) + int(correct) for loss, correct in pending)
        pending.clear()
        return total

    layout = "channels_last" if channels_last else "contiguous"
    return f"hand-written {precision} ({layout})", step, finish, None


def keras_contender(x, y, batch):
    """Keras 3 on its torch backend, or (None, why) when it cannot run here."""
    try:
        import keras
    except ImportError as e:
        return None, f"not installed ({e}); `pip install keras` to compare"
    if keras.backend.backend() != "torch":
        return None, f"KERAS_BACKEND is {keras.backend.backend()!r}, not torch"
    keras.utils.set_random_seed(0)
    net = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(10)])
    net.compile(optimizer=keras.optimizers.Adam(LR),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])
    queue = []

    def step(idx):
        queue.append(idx)

    def finish():  # one fit() per round over the round's batches, in the same order
        rows = np.concatenate(queue)
        queue.clear()
        net.fit(x[rows], y[rows], batch_size=batch, epochs=1, shuffle=False, verbose=0)
        return 0.0

    return (f"Keras {keras.__version__} (torch backend, model.fit)", step, finish, None), None


# -- measuring -----------------------------------------------------------------------------------


def run_rounds(contenders, batches, args, device):
    """Images/s of each contender per round; rounds alternate between contenders."""
    per_round = args.steps
    times = {c[0]: [] for c in contenders}
    for _name, step, finish, _ in contenders:  # warm-up: caches, allocators, layout timing
        for idx in batches[:args.warmup]:
            step(idx)
        finish()
        sync(device)
    for r in range(args.rounds):
        chunk = batches[(r * per_round) % len(batches):][:per_round]
        for name, step, finish, _ in contenders:
            sync(device)
            t0 = time.perf_counter()
            for idx in chunk:
                step(idx)
            finish()
            sync(device)
            times[name].append(len(chunk) * args.batch / (time.perf_counter() - t0))
    return {k: statistics.median(v) for k, v in times.items()}, times


def environment(device) -> list[str]:
    """What the figures depend on: versions, the processor and its bfloat16 instructions,
    threads, the BLAS and oneDNN builds."""
    import platform

    lines = [f"python {platform.python_version()}, torch {torch.__version__}, numpy "
             f"{np.__version__}, {platform.system()} {platform.machine()}"]
    cpu, flags = platform.processor() or "?", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name") and cpu in ("?", "", platform.machine()):
                    cpu = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "?")()
    lines.append(f"cpu: {cpu} ({os.cpu_count()} logical cpus; {' '.join(isa) or 'no AVX flags'}"
                 f"; torch dispatches {capability})")
    lines.append(f"threads: torch {torch.get_num_threads()} (OMP_NUM_THREADS="
                 f"{os.environ.get('OMP_NUM_THREADS', 'unset')}); oneDNN "
                 f"{'on' if torch.backends.mkldnn.is_available() else 'off'}")
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        lines.append(f"gpu: {props.name}, {props.total_memory / 2**30:.0f} GiB, CUDA "
                     f"{torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, TF32 "
                     f"matmul {torch.backends.cuda.matmul.allow_tf32}, conv "
                     f"{torch.backends.cudnn.allow_tf32}")
    return lines


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from cnnc.backends.torch.session import resolve_device

    device = resolve_device(args.device)
    gpu = device.type == "cuda"
    args.steps = args.steps or (300 if gpu else 20)
    args.warmup = args.warmup if args.warmup is not None else (50 if gpu else 5)
    model = cnnc.compile(MODEL).raise_for_errors()
    summary = model.summary()
    rng = np.random.default_rng(0)
    x = rng.random((args.images, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, args.images)
    n_batches = args.rounds * args.steps + args.warmup
    perm = np.concatenate([rng.permutation(args.images)
                           for _ in range(n_batches * args.batch // args.images + 1)])
    batches = [perm[i * args.batch:(i + 1) * args.batch] for i in range(n_batches)]

    for line in environment(device):
        print(line)
    auto = cnnc_contender(model, x, y, device, None, "cnnc auto (precision and layout)",
                          precision="auto")
    session = auto[3]
    contenders = [auto,
                  cnnc_contender(model, x, y, device, None, "cnnc fp32 (auto layout)"),
                  cnnc_contender(model, x, y, device, False, "cnnc fp32 (contiguous)"),
                  cnnc_contender(model, x, y, device, True, "cnnc fp32 (channels_last)")]
    if args.compile:
        contenders.append(cnnc_contender(model, x, y, device, None, "cnnc auto (torch.compile)",
                                         compile=True, precision="auto"))
    low = "bf16" if (not gpu or torch.cuda.is_bf16_supported()) else "fp16"
    for precision in ("fp32", low):
        for channels_last in (False, True):
            contenders.append(handwritten_contender(x, y, device, channels_last, precision))
    keras_note = "skipped (--no-keras)"
    if not args.no_keras:
        keras, why = keras_contender(x, y, args.batch)
        if keras is not None:
            contenders.append(keras)
            keras_note = None
        else:
            keras_note = why

    print(f"device {device}, batch {args.batch}, {args.rounds} rounds x {args.steps} steps "
          f"(interleaved), {args.warmup} warm-up steps each")
    print(f"cnnc auto chose: {session.precision_note}")
    medians, _ = run_rounds(contenders, batches, args, device)
    print(f"cnnc auto's layout: {session.layout} (timed steps: "
          + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in session.layout_timings.items())
          + ")")

    macs = summary.macs
    train_flops = 3 * macs * 2  # forward + two backward products per image, 2 FLOP per MAC
    # the rates `cnnc bench` and `--precision auto` measure (one probe, cached per device)
    from cnnc.backends.torch.probe import matmul_rates

    peaks = matmul_rates(device)

    def precision_of(name: str, sess) -> str:
        if sess is not None:
            return sess.precision
        if name.startswith("hand-written"):
            return name.split()[1]
        return "fp32"

    precisions = {c[0]: precision_of(c[0], c[3]) for c in contenders}
    hand = {k: v for k, v in medians.items() if k.startswith("hand-written")}
    hand32 = {k: v for k, v in hand.items() if precisions[k] == "fp32"}
    hand_low = {k: v for k, v in hand.items() if precisions[k] == low}
    best32_name = max(hand32, key=hand32.get)
    best_low_name = max(hand_low, key=hand_low.get)
    best32, best_low = hand32[best32_name], hand_low[best_low_name]
    auto_ips = medians[auto[0]]
    fp32_ips = medians["cnnc fp32 (auto layout)"]
    keras_name = next((k for k in medians if k.startswith("Keras")), None)

    width = max(len(k) for k in medians) + 2
    print()
    print(f"{'contender':<{width}}{'precision':>10}{'images/s':>10}{'vs best fp32 hand':>19}"
          f"{'GFLOP/s':>10}{'of its peak':>13}")
    for name, ips in medians.items():
        flops = ips * train_flops
        prec = precisions[name]
        print(f"{name:<{width}}{prec:>10}{ips:>10,.0f}{ips / best32:>18.2f}x"
              f"{flops / 1e9:>10.1f}{flops / peaks[prec]:>12.1%}")
    if keras_note:
        print(f"{'Keras 3':<{width}}{'':>10}{'-':>10}  {keras_note}")
    print()
    print(f"forward MACs per image {macs:,} (cnnc summary); training FLOPs per image "
          f"{train_flops:,}")
    print("measured matmul rates: " + ", ".join(f"{k} {v / 1e9:,.1f} GFLOP/s"
                                                for k, v in peaks.items()))
    print(f"cnnc auto ({session.precision}, {session.layout}) / best hand-written fp32 "
          f"({best32_name.rsplit('(', 1)[1].rstrip(')')}): {auto_ips / best32:.2f}x "
          f"(goal >= 1.3x)")
    print(f"cnnc auto / best hand-written {low} ({best_low_name.rsplit('(', 1)[1].rstrip(')')}):"
          f" {auto_ips / best_low:.2f}x (goal >= 0.95x)")
    print(f"cnnc fp32 / best hand-written fp32: {fp32_ips / best32:.2f}x (goal >= 0.95x)")
    if keras_name:
        print(f"cnnc auto / Keras 3: {auto_ips / medians[keras_name]:.2f}x; cnnc fp32 / Keras 3: "
              f"{fp32_ips / medians[keras_name]:.2f}x (goal >= 1.5x)")
    print("(ratios of contenders measured side by side in this run; absolute figures depend on "
          "the machine's other work)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
