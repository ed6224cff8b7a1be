"""Training speed: cnnc's torch session against a hand-written PyTorch loop and Keras 3.

    python benchmarks/torch_backend.py [--device auto|cpu|cuda] [--batch 64] [--steps 30]
                                       [--rounds 5] [--threads N] [--no-keras] [--compile]

Model (the seeds' two-convolution model, Fashion-MNIST shapes: 28x28x1, 10 classes):

    conv 32 3x3 same relu / pool 2 / conv 64 3x3 same relu / pool 2 / flatten /
    dense 128 relu / dense 10, softmax cross-entropy, Adam (lr 1e-3)

Contenders, all in this process with the same threads, the same data held on the device and
the same random batches:

* cnnc: `cnnc.compile(...).to_backend("torch")`, driven through `session.train_step` as the
  training engine drives it (the loss and correct count read back once per round);
* hand-written: nn.Sequential of the same layers + torch.optim.Adam, the loop everyone writes
  (index a batch, forward, cross_entropy, zero_grad, backward, step, count correct), in both
  memory layouts (contiguous N x C x H x W and channels_last); the faster is "best hand-written";
* Keras 3 with KERAS_BACKEND=torch, `model.fit` on the same images (when keras is installed).

Rounds alternate between the contenders so that machine noise hits all alike; we report the
median round of each, and the training FLOP/s (3 x forward MACs x 2 per image, MACs from cnnc's
summary) as a fraction of this machine's measured fp32 matmul rate.
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
    ap.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda")
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


def cnnc_contender(model, x, y, device, channels_last, name, compile=False):
    session = model.to_backend("torch", seed=0, device=str(device), channels_last=channels_last,
                               compile=compile)
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


def handwritten_contender(x, y, device, channels_last: bool, amp: bool):
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10)).to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=fmt)
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous().to(device)
    yt = torch.from_numpy(y).to(device)
    pending = []

    def step(idx):
        i = torch.from_numpy(idx).to(device)
        xb = xt.index_select(0, i).contiguous(memory_format=fmt)
        yb = yt.index_select(0, i)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = net(xb)
        loss = F.cross_entropy(out.float(), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        pending.append((loss.detach(), (out.argmax(1) == yb).sum()))

    def finish():
        total = sum(float(loss) + int(correct) for loss, correct in pending)
        pending.clear()
        return total

    layout = "channels_last" if channels_last else "contiguous"
    return f"hand-written nn.Sequential ({layout})", step, finish, None


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


def matmul_rate(device, dtype=torch.float32) -> float:
    """This machine's dense matmul throughput, FLOP/s: the best of a few large products."""
    best = 0.0
    for n in ((4096, 8192) if device.type == "cuda" else (1024, 2048)):
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        reps = 10 if device.type == "cuda" else 2
        torch.matmul(a, b)
        for _ in range(5):
            sync(device)
            t0 = time.perf_counter()
            for _ in range(reps):
                torch.matmul(a, b)
            sync(device)
            best = max(best, 2 * n ** 3 * reps / (time.perf_counter() - t0))
    return best


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

    contenders = [cnnc_contender(model, x, y, device, None, "cnnc torch session (auto layout)")]
    session = contenders[0][3]
    amp = session.amp
    contenders.append(cnnc_contender(model, x, y, device, False, "cnnc (contiguous)"))
    contenders.append(cnnc_contender(model, x, y, device, True, "cnnc (channels_last)"))
    if args.compile:
        contenders.append(cnnc_contender(model, x, y, device, None, "cnnc (torch.compile)",
                                         compile=True))
    contenders.append(handwritten_contender(x, y, device, False, amp))
    contenders.append(handwritten_contender(x, y, device, True, amp))
    keras_note = "skipped (--no-keras)"
    if not args.no_keras:
        keras, why = keras_contender(x, y, args.batch)
        if keras is not None:
            contenders.append(keras)
            keras_note = None
        else:
            keras_note = why

    print(f"torch {torch.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
          + f", {torch.get_num_threads()} threads, batch {args.batch}, "
          f"{'bf16 autocast' if amp else 'fp32'}, {args.rounds} rounds x {args.steps} steps")
    medians, _ = run_rounds(contenders, batches, args, device)
    print(f"cnnc's automatic layout: {session.layout} (timed steps: "
          + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in session.layout_timings.items())
          + ")")

    macs = summary.macs
    train_flops = 3 * macs * 2  # forward + two backward products per image, 2 FLOP per MAC
    peak = matmul_rate(device)
    peak_bf16 = matmul_rate(device, torch.bfloat16) if device.type == "cuda" else None

    hand = {k: v for k, v in medians.items() if k.startswith("hand-written")}
    best_hand_name = max(hand, key=hand.get)
    best_hand = hand[best_hand_name]
    cnnc_ips = medians[contenders[0][0]]
    keras_name = next((k for k in medians if k.startswith("Keras")), None)

    width = max(len(k) for k in medians) + 2
    print()
    print(f"{'contender':<{width}}{'images/s':>10}{'vs best hand':>14}{'GFLOP/s':>10}"
          f"{'of fp32 peak':>14}")
    for name, ips in medians.items():
        flops = ips * train_flops
        print(f"{name:<{width}}{ips:>10,.0f}{ips / best_hand:>13.2f}x{flops / 1e9:>10.1f}"
              f"{flops / peak:>13.1%}")
    if keras_note:
        print(f"{'Keras 3':<{width}}{'-':>10}  {keras_note}")
    print()
    print(f"forward MACs per image {macs:,} (cnnc summary); training FLOPs per image "
          f"{train_flops:,}")
    print(f"measured fp32 matmul rate {peak / 1e9:,.1f} GFLOP/s"
          + (f"; bf16 {peak_bf16 / 1e9:,.1f} GFLOP/s" if peak_bf16 else ""))
    layout = best_hand_name.rsplit("(", 1)[1].rstrip(")")
    print(f"cnnc / best hand-written ({layout}): {cnnc_ips / best_hand:.2f}x "
          f"(goal >= 0.95x)")
    if keras_name:
        print(f"cnnc / Keras 3: {cnnc_ips / medians[keras_name]:.2f}x (goal >= 1.5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
