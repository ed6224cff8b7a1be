"""Training speed: cnnc's NumPy kernels against a hand-written PyTorch loop, same process.

    python benchmarks/numpy_backend.py [--steps 10] [--rounds 5] [--batch 64]
                                       [--optimizer sgd|adam] [--threads N] [--default-malloc]

Model (Fashion-MNIST shaped input, 1x28x28, 10 classes):

    conv 32 3x3 pad=same, relu, maxpool 2, conv 64 3x3 pad=same, relu, maxpool 2,
    flatten, dense 128, relu, dense 10, softmax cross-entropy, optimizer step

Both sides start from the same weights, see the same random batches and use the same number of
threads (numpy's BLAS and torch's intra-op pool). The timed rounds alternate numpy / torch so
that machine noise hits both alike; we report the median round of each, and the best round
(the better estimate when other work on the machine interferes).

The NumPy side is built by ``make_numpy_train_step`` alone -- swap that one function to
benchmark another composition of the kernels (e.g. the full cnnc backend model).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time


def _parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10, help="training steps per timed round (default 10)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    ap.add_argument("--rounds", type=int, default=5, help="alternating timed rounds per side (default 5)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per side first (default 3)")
    ap.add_argument("--threads", type=int, default=None, help="threads for BLAS and torch (default: all cores)")
    ap.add_argument("--default-malloc", dest="keep_freed_memory", action="store_false",
                    help="leave glibc malloc's defaults; by default the benchmark, like `cnnc "
                         "train --backend numpy`, keeps freed memory in the process (both "
                         "sides; see cnnc.memory.keep_freed_memory)")
    return ap.parse_args(argv)


ARGS = _parse_args() if __name__ == "__main__" else None
if ARGS and ARGS.threads:
    THREADS = ARGS.threads
elif os.environ.get("OPENBLAS_NUM_THREADS", "").isdigit():
    THREADS = int(os.environ["OPENBLAS_NUM_THREADS"])  # respect what the caller asked BLAS for
else:
    THREADS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
# BLAS reads its thread count when numpy is first imported, so set it before that import.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = str(THREADS)

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cnnc.backends.numpy.kernels import (  # noqa: E402
    activation_backward,
    activation_forward,
    conv2d_backward,
    conv2d_forward,
    dense_backward,
    dense_forward,
    flatten_backward,
    flatten_forward,
    maxpool2d_backward,
    maxpool2d_forward,
)
from cnnc.backends.numpy.losses import softmax_cross_entropy  # noqa: E402
from cnnc.backends.numpy.optim import make_optimizer  # noqa: E402
from cnnc.memory import keep_freed_memory  # noqa: E402

LR = {"sgd": 0.01, "adam": 1e-3}


def _openblas_query(*names: str):
    """Call the first of `names` found in an OpenBLAS that numpy loaded (scipy-openblas builds
    prefix and suffix the symbols), or return None (no OpenBLAS: MKL, Accelerate...)."""
    import ctypes

    try:
        with open("/proc/self/maps") as f:
            libs = sorted({line.split()[-1] for line in f if "blas" in line.lower() and ".so" in line})
    except OSError:
        libs = []
    for lib in libs:
        try:
            handle = ctypes.CDLL(lib)
        except OSError:
            continue
        for prefix in ("scipy_openblas_", "openblas_"):
            for suffix in ("64_", ""):
                for name in names:
                    fn = getattr(handle, f"{prefix}{name}{suffix}", None)
                    if fn is not None:
                        if name.startswith("get_config") or name.startswith("get_corename"):
                            fn.restype = ctypes.c_char_p
                            return fn().decode()
                        return fn()
    return None


def blas_threads() -> str:
    """How many threads numpy's BLAS uses, asked from the library itself where we can."""
    try:
        from threadpoolctl import threadpool_info

        counts = {d["num_threads"] for d in threadpool_info() if d.get("user_api") == "blas"
                  and "numpy" in d.get("filepath", "")}
        if len(counts) == 1:
            return str(counts.pop())
    except ImportError:
        pass
    n = _openblas_query("get_num_threads")
    if n is not None:
        return str(n)
    return f"{os.environ.get('OPENBLAS_NUM_THREADS')} (from OPENBLAS_NUM_THREADS; not verified)"


def environment(malloc_note: str) -> list[str]:
    """What the figures depend on besides the code, for the header: CPU, load, numpy's BLAS and
    its threads, torch's threads and libraries, glibc malloc's settings."""
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = "load average %.1f %.1f %.1f" % os.getloadavg() if hasattr(os, "getloadavg") else "load unknown"

    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas_name = f"{blas.get('name')} {blas.get('version')}"
    except Exception:  # older numpy: no dicts mode
        blas_name = "unknown"
    kernel = _openblas_query("get_corename")
    blas_name += f" ({kernel} kernels)" if kernel else ""

    torch_libs = []
    show = torch.__config__.show()
    for key, label in (("Math Kernel Library", "MKL"), ("MKL-DNN", "oneDNN")):
        line = next((ln for ln in show.splitlines() if key in ln), None)
        if line is not None:
            version = re.search(r"\bv?(\d+(?:\.\d+)+)", line)
            torch_libs.append(f"{label} {version.group(1)}" if version else label)
    capability = torch.backends.cpu.get_cpu_capability() if hasattr(torch.backends, "cpu") else "?"

    thread_vars = " ".join(f"{v}={os.environ.get(v, '-')}" for v in
                           ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"))
    malloc_vars = [f"{k}={v}" for k, v in sorted(os.environ.items())
                   if k.startswith("MALLOC_") or k in ("GLIBC_TUNABLES", "LD_PRELOAD")]
    libc = os.confstr("CS_GNU_LIBC_VERSION") if hasattr(os, "confstr") else platform.libc_ver()[0]
    return [
        f"cpu: {cpu}, {cores} cores available, {load}",
        f"python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}",
        f"numpy BLAS: {blas_name}, {blas_threads()} threads",
        f"torch: {torch.get_num_threads()} intra-op threads, {', '.join(torch_libs) or 'no MKL/oneDNN'}, "
        f"CPU capability {capability}",
        f"thread variables: {thread_vars}",
        f"malloc: {libc}, {malloc_note}; environment: {' '.join(malloc_vars) or 'no MALLOC_* variables'}",
    ]


# ----------------------------------------------------------------------------------------------
# The PyTorch reference: what a person would write by hand.
# ----------------------------------------------------------------------------------------------


def make_torch_model() -> torch.nn.Sequential:
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10),
    )


def make_torch_train_step(model, optimizer_name):
    opt = (torch.optim.SGD if optimizer_name == "sgd" else torch.optim.Adam)(model.parameters(), lr=LR[optimizer_name])
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(x: torch.Tensor, y: torch.Tensor) -> float:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss.item()

    return step


# ----------------------------------------------------------------------------------------------
# The NumPy side: the cnnc kernels composed by hand into one training step.
# ----------------------------------------------------------------------------------------------


def make_numpy_train_step(params: dict[str, np.ndarray], optimizer_name: str):
    """Return step(x, labels) -> loss for the benchmark model, built from cnnc's numpy kernels.

    ``params`` (PyTorch names and layouts, float32) is updated in place by the optimizer.
    """
    opt = make_optimizer(optimizer_name, LR[optimizer_name])
    P = params
    pool = dict(kernel=(2, 2), stride=(2, 2), pads=(0, 0, 0, 0))

    def step(x: np.ndarray, labels: np.ndarray) -> float:
        # forward                                                              shapes for N = 64
        h, c_conv1 = conv2d_forward(x, P["0.weight"], P["0.bias"], pads=(1, 1, 1, 1))  # (N,32,28,28)
        h, c_relu1 = activation_forward(h, "relu")
        h, c_pool1 = maxpool2d_forward(h, out_hw=(14, 14), **pool)  # (N, 32, 14, 14)
        h, c_conv2 = conv2d_forward(h, P["3.weight"], P["3.bias"], pads=(1, 1, 1, 1))  # (N,64,14,14)
        h, c_relu2 = activation_forward(h, "relu")
        h, c_pool2 = maxpool2d_forward(h, out_hw=(7, 7), **pool)  # (N, 64, 7, 7)
        h, c_flat = flatten_forward(h)  # (N, 3136)
        h, c_fc1 = dense_forward(h, P["7.weight"], P["7.bias"])  # (N, 128)
        h, c_relu3 = activation_forward(h, "relu")
        logits, c_fc2 = dense_forward(h, P["9.weight"], P["9.bias"])  # (N, 10)
        loss, d = softmax_cross_entropy(logits, labels)

        # backward, in reverse order
        g = {}
        d, g["9.weight"], g["9.bias"] = dense_backward(d, c_fc2)
        d = activation_backward(d, c_relu3)
        d, g["7.weight"], g["7.bias"] = dense_backward(d, c_fc1)
        d = flatten_backward(d, c_flat)
        d = maxpool2d_backward(d, c_pool2)
        d = activation_backward(d, c_relu2)
        d, g["3.weight"], g["3.bias"] = conv2d_backward(d, c_conv2)
        d = maxpool2d_backward(d, c_pool1)
        d = activation_backward(d, c_relu1)
        _, g["0.weight"], g["0.bias"] = conv2d_backward(d, c_conv1, need_dx=False)  # input: no grad

        opt.step(P, g)
        return loss

    return step


# ----------------------------------------------------------------------------------------------


CNNC_MODEL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                  "examples", "fashion_cnn.cnn")  # the seeds' two-convolution model
# the hand-written Sequential's parameter names -> the cnnc model's layer names
CNNC_NAMES = {"0": "conv_1", "3": "conv_2", "7": "dense_1", "9": "dense_2"}


def make_session_train_step(params: dict[str, np.ndarray], optimizer_name: str):
    """What `cnnc train --backend numpy` runs: the compiled model's NumPy session, train_step
    on a split put there once, indexed by batch (lowering, fused activations, loss plan and
    all). Returns (step(data, idx) -> loss, put(x, y) -> data)."""
    import cnnc
    from cnnc.train.config import TrainConfig

    session = cnnc.compile(CNNC_MODEL).raise_for_errors().to_backend("numpy", seed=0)
    session.set_weights({f"{CNNC_NAMES[k.split('.')[0]]}.{k.split('.')[1]}": v.copy()
                         for k, v in params.items()})
    session.configure_optimizer(TrainConfig(optimizer=optimizer_name, lr=LR[optimizer_name]))

    def step(data, idx):
        return float(session.train_step(data, idx)[0])

    return step, lambda x, y: session.put(x.transpose(0, 2, 3, 1), y)


def main(args) -> int:
    malloc_note = "default settings (--default-malloc)"
    if args.keep_freed_memory:
        malloc_note = ("keeps freed memory (mallopt: mmap threshold 32 MiB, trim threshold 1 GiB, "
                       "as cnnc train --backend numpy)" if keep_freed_memory()
                       else "default settings (mallopt unavailable)")
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    N = args.batch

    model = make_torch_model()
    params = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}  # same start
    session_step, session_put = make_session_train_step(params, args.optimizer)
    np_step = make_numpy_train_step(params, args.optimizer)
    torch_step = make_torch_train_step(model, args.optimizer)

    # A pool of random Fashion-MNIST-shaped batches, shared by both sides.
    batches = [
        (rng.standard_normal((N, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, N).astype(np.int64))
        for _ in range(8)
    ]
    torch_batches = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in batches]
    session_batches = [(session_put(x, y), np.arange(N)) for x, y in batches]

    # Sanity check: from the same weights on the same batch, the first losses agree.
    l_np, l_t = np_step(*batches[0]), torch_step(*torch_batches[0])
    l_s = session_step(*session_batches[0])
    if max(abs(l_np - l_t), abs(l_s - l_t)) > 1e-4 * max(1.0, abs(l_t)):
        print(f"WARNING: first-step losses differ: numpy {l_np:.6f} session {l_s:.6f} "
              f"torch {l_t:.6f}")

    cpu = {}  # CPU seconds of the whole process (every thread) per side, summed over rounds

    def run(step, data, n):
        c0, t0 = time.process_time(), time.perf_counter()
        for i in range(n):
            step(*data[i % len(data)])
        cpu[step] = cpu.get(step, 0.0) + time.process_time() - c0
        return time.perf_counter() - t0

    for _ in range(args.warmup):
        run(np_step, batches, 1)
        run(session_step, session_batches, 1)
        run(torch_step, torch_batches, 1)
    cpu.clear()
    t_np, t_session, t_torch = [], [], []
    for _ in range(args.rounds):  # alternate, so slow spells of the machine hit every side
        t_np.append(run(np_step, batches, args.steps))
        t_session.append(run(session_step, session_batches, args.steps))
        t_torch.append(run(torch_step, torch_batches, args.steps))

    def rate(times):
        return N * args.steps / float(np.median(times))

    r_np, r_session, r_torch = rate(t_np), rate(t_session), rate(t_torch)
    print(f"batch {N}, {args.optimizer}, {args.rounds} rounds x {args.steps} steps "
          f"({args.rounds * args.steps * N} images) per side after {args.warmup} warm-up steps")
    for line in environment(malloc_note):
        print(line)
    print()
    print(f"{'':<22}{'images/s':>12}{'ms/step':>10}{'best':>10}{'worst':>10}{'cpu ms/step':>14}")
    rows = (("numpy kernels", r_np, t_np, np_step), ("cnnc numpy session", r_session, t_session, session_step),
            ("torch", r_torch, t_torch, torch_step))
    for name, r, ts, step in rows:
        per = [1e3 * t / args.steps for t in ts]
        cpu_per = 1e3 * cpu[step] / (args.rounds * args.steps)
        print(f"{name:<22}{r:>12.0f}{np.median(per):>10.2f}{min(per):>10.2f}{max(per):>10.2f}{cpu_per:>14.2f}")
    print("(cpu: the process's CPU time per step, all threads, waiting ones included; on a busy "
          "machine the wall-time columns also count time the side waited for a core)")
    print()
    print(f"ratio numpy kernels/torch (images/s): {r_np / r_torch:.2f} on median rounds, "
          f"{min(t_torch) / min(t_np):.2f} on best rounds")
    print(f"ratio cnnc numpy session/torch (what `cnnc train --backend numpy` runs): "
          f"{r_session / r_torch:.2f} on median rounds, {min(t_torch) / min(t_session):.2f} on "
          f"best rounds (goal >= 0.8)")
    print(f"the same ratios on CPU time per step: numpy kernels {cpu[torch_step] / cpu[np_step]:.2f}, "
          f"cnnc numpy session {cpu[torch_step] / cpu[session_step]:.2f} (with one thread a side, the "
          f"measure a busy machine disturbs least)")
    return 0


if __name__ == "__main__":
    sys.exit(main(ARGS))
