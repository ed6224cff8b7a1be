"""examples/fashion_fast.cnn's recipe (or fashion_bn.cnn's) written by hand in PyTorch, as a
careful person would.

    python benchmarks/fashion_fast_torch.py --data DIR [--model fashion_fast|fashion_bn]
        [--epochs 18] [--batch 128] [--lr 2e-3] [--precision bf16|fp32] [--device cpu|cuda]
        [--limit N] [--seed 0] [--flip] [--init FILE] [--save-init FILE]

DIR holds Fashion-MNIST's four IDX files (raw or .gz). What "careful" means here: the whole data
set read once into tensors on the device (no DataLoader, no per-step copies), channels_last
memory layout, autocast in the given precision with float32 weights (as cnnc's torch backend
does), torch.optim.Adam with foreach (fused on CUDA), the learning rate set every step (cosine
from --lr to 0 over the run, as cnnc's `schedule cosine`), figures read back from the device
once per epoch. The weights start from PyTorch's default initialisation, as a hand-written script's
would, or from --init FILE (a safetensors file of the model's state_dict); --save-init FILE writes
the initial weights of --seed there and exits, so that benchmarks/time_to_accuracy.py can start
cnnc (`cnnc train --init FILE`) and this script from the same weights. --flip mirrors each
training image left-right with probability 1/2, on the device (cnnc's `flip`).

It prints one JSON line per epoch, {"epoch", "train_seconds", "test_accuracy", "test_seconds"},
scoring the test split after each epoch so that benchmarks/time_to_accuracy.py can tell when the
target accuracy is reached (it leaves the scoring time out), and first a line with the model's
parameter count, which that script checks against cnnc's to be sure the recipes agree.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def read_idx(folder: str, name: str) -> np.ndarray:
    """One IDX file (`train-images-idx3-ubyte` or its .gz) as a uint8 array."""
    path = os.path.join(folder, name)
    opener = open if os.path.exists(path) else gzip.open
    with opener(path if os.path.exists(path) else path + ".gz", "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_fashion(folder: str):
    """(train images, train labels, test images, test labels): images N x 28 x 28 float32 in
    [0, 1], labels int64."""
    def images(split):
        return read_idx(folder, f"{split}-images-idx3-ubyte").astype(np.float32) / 255.0

    def labels(split):
        return read_idx(folder, f"{split}-labels-idx1-ubyte").astype(np.int64)

    return images("train"), labels("train"), images("t10k"), labels("t10k")


def fashion_fast() -> nn.Sequential:
    """examples/fashion_fast.cnn, layer for layer."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1, bias=False), nn.BatchNorm2d(128), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(128 * 3 * 3, 256, bias=False), nn.BatchNorm1d(256), nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(256, 10))  # softmax folded into the cross-entropy


def fashion_bn() -> nn.Sequential:
    """examples/fashion_bn.cnn, layer for layer."""
    return nn.Sequential(
        nn.Conv2d(1, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Dropout(0.1),
        nn.Conv2d(64, 128, 3, padding=1, bias=False), nn.BatchNorm2d(128), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Dropout(0.25),
        nn.Flatten(),
        nn.Linear(128 * 7 * 7, 256, bias=False), nn.BatchNorm1d(256), nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(256, 10))


MODELS = {"fashion_fast": fashion_fast, "fashion_bn": fashion_bn}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="the folder of Fashion-MNIST's IDX files")
    ap.add_argument("--model", choices=sorted(MODELS), default="fashion_fast",
                    help="which example's model")
    ap.add_argument("--epochs", type=int, default=18)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--schedule", choices=["cosine", "constant"], default="cosine")
    ap.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--limit", type=int, default=None, help="only the first N training images")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--flip", action="store_true", help="mirror training images at random")
    ap.add_argument("--init", metavar="FILE", help="start from these weights (safetensors)")
    ap.add_argument("--save-init", metavar="FILE",
                    help="write the initial weights (safetensors) and exit")
    args = ap.parse_args(argv)
    if not args.data and not args.save_init:
        ap.error("--data is needed to train")

    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    if args.save_init:
        from safetensors.torch import save_file

        state = MODELS[args.model]().state_dict()
        save_file({k: v.contiguous() for k, v in state.items()
                   if not k.endswith("num_batches_tracked")}, args.save_init)
        return
    train_x, train_y, test_x, test_y = load_fashion(args.data)
    if args.limit:
        train_x, train_y = train_x[:args.limit], train_y[:args.limit]
    fmt = torch.channels_last

    def tensors(x, y):
        return (torch.from_numpy(x)[:, None].to(device).contiguous(memory_format=fmt),
                torch.from_numpy(y).to(device))

    xt, yt = tensors(train_x, train_y)
    xs, ys = tensors(test_x, test_y)
    net = MODELS[args.model]()
    if args.init:
        from safetensors.torch import load_file

        got = net.load_state_dict(load_file(args.init), strict=False)
        missing = [k for k in got.missing_keys if not k.endswith("num_batches_tracked")]
        if missing or got.unexpected_keys:
            raise SystemExit(f"--init {args.init}: missing {missing}, unexpected "
                             f"{got.unexpected_keys}")
    net = net.to(device).to(memory_format=fmt)
    print(json.dumps({"parameters": sum(p.numel() for p in net.parameters())}), flush=True)
    fast = {"fused": True} if device.type == "cuda" else {"foreach": True}
    opt = torch.optim.Adam(net.parameters(), lr=args.lr, **fast)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16,
                              enabled=args.precision == "bf16")
    n, bs = len(xt), args.batch
    steps = math.ceil(n / bs)
    total_steps = args.epochs * steps

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for epoch in range(1, args.epochs + 1):
        started = time.perf_counter()
        net.train()
        perm = torch.randperm(n, device=device)
        loss_sum = torch.zeros((), device=device)
        for b in range(steps):
            if args.schedule == "cosine":
                t = (epoch - 1) * steps + b
                for group in opt.param_groups:
                    group["lr"] = args.lr * 0.5 * (1 + math.cos(math.pi * t / total_steps))
            idx = perm[b * bs:(b + 1) * bs]
            xb, yb = xt[idx], yt[idx]
            if args.flip:
                mirror = torch.rand(len(idx), 1, 1, 1, device=device) < 0.5
                xb = torch.where(mirror, xb.flip(3), xb)
            with autocast:
                out = net(xb)
            loss = F.cross_entropy(out.float(), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach()
        train_loss = float(loss_sum) / steps  # the one read-back of the epoch
        sync()
        trained = time.perf_counter()
        net.eval()
        correct = 0
        with torch.no_grad(), autocast:
            for start in range(0, len(xs), 1000):
                out = net(xs[start:start + 1000])
                correct += int((out.argmax(1) == ys[start:start + 1000]).sum())
        print(json.dumps({"epoch": epoch, "train_loss": round(train_loss, 5),
                          "train_seconds": round(trained - started, 4),
                          "test_accuracy": correct / len(xs),
                          "test_seconds": round(time.perf_counter() - trained, 4)}), flush=True)


if __name__ == "__main__":
    main()
