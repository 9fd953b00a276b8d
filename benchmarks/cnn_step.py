"""One training step of a small CNN in shallow.cnn against the same step in PyTorch, on the CPU (or GPU).

A step is forward + softmax cross-entropy + backward + SGD update (momentum 0.9, weight decay
5e-4) on one batch, in float32, for the same architecture with the same weights (the PyTorch
network is built from ours, layer by layer, and its outputs are checked against ours before
timing), the same batch and the same number of threads (OpenBLAS for numpy, intra-op threads for
PyTorch).

Each library is timed in its own process, the processes alternating (ours, torch, ours, torch,
...): in one process, OpenBLAS's idle threads spin after the numpy steps and slow PyTorch down,
which would flatter numpy. Every process runs warm-up steps, then ``--steps`` timed steps and
reports their median; the printed time of a library is the median over its ``--rounds`` processes.
PyTorch is timed in its default NCHW layout and with ``channels_last`` (NHWC) tensors, and the
faster of the two is the reference. The ratio printed is

    speed ratio = (PyTorch step time) / (shallow.cnn step time)     (1 = as fast as PyTorch).

The machine (CPU model, cores, load average before and after) is printed: other processes on the
cores distort every number, so compare runs made at low load.

Threads: shallow.cnn computes on one core. Its convolutions are row-blocked GEMMs small enough
for OpenBLAS's small-matrix kernels, which run on the calling thread, and scipy's BLAS wrappers
hold the GIL; numpy's elementwise operations are single-threaded too. The like-for-like
comparison is therefore one thread each (the default); ``--threads 2`` measures what PyTorch
gains from a second core, which shallow.cnn does not use.

    python benchmarks/cnn_step.py                      # VGG, 28x28, width 32, batch 128
    python benchmarks/cnn_step.py --size 8 --arch resnet --threads 1
    python benchmarks/cnn_step.py --device gpu          # CuPy against PyTorch on the same GPU
    python benchmarks/cnn_step.py --device gpu --capture    # and the step replayed as a CUDA graph

On a GPU the steps are synchronised before every clock reading; the CPU-time columns are then
meaningless. ``--capture`` also times the step as a :class:`~shallow.cnn.graph.CapturedStep`:
recorded once as a CUDA graph and replayed by one launch per step, which takes the host's launch
cost out of the step (its matrix products then call cuBLAS through a ctypes handle of shallow.cnn's
own, :mod:`shallow.cnn._cublas`, since CuPy refuses cuBLAS calls during capture); ``fit`` does this
by default on a GPU. PyTorch is timed as it runs by default, launch by launch.

Measured on an NVIDIA H200 (CuPy 14.2, PyTorch 2.11 with cuDNN, 2026-11-29; one process per
library, since process start-up, not the steps, dominates there), VGG 28x28, width 32, float32:

    batch 128:  shallow.cnn 17.8 ms launch by launch, 3.80 ms captured; PyTorch 3.86 ms: 1.01x captured
    batch 1024: shallow.cnn 27.0 ms launch by launch, 20.2 ms captured; PyTorch channels_last 11.75 ms: 0.58x

(0.10x and 0.03x on 2026-11-27, before the device code path was reworked: one im2col copy and one
GEMM per convolution, weight gradients and channel sums split into row chunks by
:mod:`shallow.cnn._reduce`, flat parameters updated at once, no wait for the device within a step.)
With ``--tf32`` PyTorch's batch-1024 step takes 6.19 ms. The same steps on that machine's CPU (one
thread, 2026-11-27): 366 ms and 3800 ms for shallow.cnn, so the captured CuPy step is about 96x and
190x the numpy one. ``benchmarks/cnn_layers.py`` splits a step by layer (batch 128: each batch norm
about 0.9 ms of a 16 ms step, launch-bound) and ``benchmarks/device_primitives.py`` times the split
reductions against the single calls.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


# ----------------------------------------------------------------------------- the model, both ways

def build_ours(cfg):
    import numpy as np

    from shallow.cnn import build_model
    kwargs = {"width": cfg["width"]}
    if cfg["arch"] == "resnet":
        kwargs["blocks"] = cfg["blocks"]
    return build_model(cfg["arch"], (cfg["size"], cfg["size"], 1), 10, rng=0, dtype=np.float32, **kwargs)


def to_torch(layer):
    """The PyTorch module computing the same function as one of our layers (weights copied)."""
    import numpy as np
    import torch
    from torch import nn

    from shallow import cnn

    def tensor(a):
        return torch.from_numpy(np.ascontiguousarray(a))

    if isinstance(layer, cnn.Model):
        if layer.centering is not None or layer.alpha != 1.0:
            raise ValueError("the benchmark mirrors plain models only")
        return to_torch(layer.net)
    if isinstance(layer, cnn.Sequential):
        return nn.Sequential(*[to_torch(child) for child in layer.layers])
    if isinstance(layer, cnn.Conv2d):
        pt, pb, pl, pr = layer.padding
        if pt != pb or pl != pr:
            raise ValueError("asymmetric padding is not mirrored")
        m = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                      padding=(pt, pl), dilation=layer.dilation, groups=layer.groups, bias="b" in layer.params)
        with torch.no_grad():
            m.weight.copy_(tensor(layer.params["W"].transpose(3, 2, 0, 1)))  # (KH,KW,Cg,Co) -> (Co,Cg,KH,KW)
            if "b" in layer.params:
                m.bias.copy_(tensor(layer.params["b"]))
        return m
    if isinstance(layer, cnn.BatchNorm2d):
        m = nn.BatchNorm2d(layer.num_features, eps=layer.eps, momentum=layer.momentum)
        with torch.no_grad():
            m.weight.copy_(tensor(layer.params["gamma"]))
            m.bias.copy_(tensor(layer.params["beta"]))
        return m
    if isinstance(layer, cnn.Activation):
        if layer.sigma.name != "relu":
            raise ValueError("only relu is mirrored")
        return nn.ReLU()
    if isinstance(layer, cnn.MaxPool2d):
        return nn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding)
    if isinstance(layer, cnn.AvgPool2d):
        return nn.AvgPool2d(layer.kernel_size, layer.stride, layer.padding)
    if isinstance(layer, cnn.GlobalAvgPool2d):
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    if isinstance(layer, cnn.Linear):
        m = nn.Linear(layer.in_features, layer.out_features, bias="b" in layer.params)
        with torch.no_grad():
            m.weight.copy_(tensor(layer.params["W"].T))
            if "b" in layer.params:
                m.bias.copy_(tensor(layer.params["b"]))
        return m
    if isinstance(layer, cnn.Residual):
        body, shortcut = to_torch(layer.body), to_torch(layer.shortcut)

        class Res(nn.Module):
            def __init__(self):
                super().__init__()
                self.body, self.shortcut = body, shortcut

            def forward(self, x):
                return self.body(x) + self.shortcut(x)

        return Res()
    if isinstance(layer, cnn.Identity):
        return nn.Identity()
    raise ValueError(f"no PyTorch mirror for {type(layer).__name__}")


def batch(cfg):
    import numpy as np
    rng = np.random.default_rng(1)
    x = rng.standard_normal((cfg["batch"], cfg["size"], cfg["size"], 1)).astype(np.float32)
    y = rng.integers(0, 10, cfg["batch"])
    return x, y


# ----------------------------------------------------------------------------- workers (one process each)

def time_steps(step, warmup, steps, sync=lambda: None):
    """Median wall time and median CPU time (all threads of the process) of one step."""
    for _ in range(warmup):
        step()
    sync()
    wall, cpu = [], []
    for _ in range(steps):
        start, start_cpu = time.perf_counter(), time.process_time()
        step()
        sync()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return {"time": statistics.median(wall), "cpu": statistics.median(cpu)}


def worker_ours(cfg, captured=False):
    from shallow.backend import get_xp, to_device
    from shallow.cnn import SGD, CapturedStep, CrossEntropy
    from shallow.cnn.train import train_step
    device = cfg["device"]
    model = build_ours(cfg).to(device)
    # the batch is checked once, as fit checks its data once: a per-step finiteness check of the
    # input would wait for the device every step (PyTorch's step checks nothing)
    model.check_inputs = False
    opt = SGD(model.named_parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    loss = CrossEntropy()
    x, y = (to_device(a, device) for a in batch(cfg))
    xp = get_xp(x)
    sync = (lambda: xp.cuda.Device().synchronize()) if device == "gpu" else (lambda: None)
    if captured:  # recorded as a CUDA graph on the second step (within the warm-up), then replayed
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            step = CapturedStep(model, loss, opt)
            timing = time_steps(lambda: step(x, y), max(cfg["warmup"], 2), cfg["steps"], sync)
        return {**timing, "recorded": step.recorded, "warnings": [str(w.message) for w in caught]}
    return time_steps(lambda: train_step(model, loss, opt, x, y, check=False), cfg["warmup"], cfg["steps"], sync)


def worker_torch(cfg, layout):
    import numpy as np
    import torch
    torch.set_num_threads(cfg["threads"])
    dev = "cuda" if cfg["device"] == "gpu" else "cpu"
    # cuDNN convolutions default to TF32 tensor cores on Ampere and later (10-bit mantissas):
    # another precision than the float32 GEMMs of shallow.cnn, unless --tf32 asks for it
    torch.backends.cudnn.allow_tf32 = cfg["tf32"]
    torch.backends.cuda.matmul.allow_tf32 = cfg["tf32"]
    ours = build_ours(cfg)
    net = to_torch(ours)
    x, y = batch(cfg)
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    yt = torch.from_numpy(y)
    if layout == "channels_last":
        net = net.to(memory_format=torch.channels_last)
        xt = xt.contiguous(memory_format=torch.channels_last)
    # same function: outputs agree with ours (train mode, batch statistics) to float32 rounding
    with torch.no_grad():
        ref = net(xt).numpy()
    out = ours.forward(x)
    err = float(np.abs(out - ref).max() / (np.abs(ref).max() + 1e-30))
    if err > 1e-3:
        raise RuntimeError(f"the PyTorch mirror disagrees with shallow.cnn: relative error {err:.2e}")
    net, xt, yt = net.to(dev), xt.to(dev), yt.to(dev)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    lossf = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = lossf(net(xt), yt)
        loss.backward()
        opt.step()

    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    return {**time_steps(step, cfg["warmup"], cfg["steps"], sync), "agreement": err, "version": torch.__version__}


def run_worker(kind, cfg):
    """Run one timing process and return its JSON answer."""
    env = dict(os.environ)
    threads = str(cfg["threads"])
    env.update(OPENBLAS_NUM_THREADS=threads, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads,
               PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, __file__, "--worker", kind, "--config", json.dumps(cfg)],
                          capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {kind} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="vgg", choices=("vgg", "resnet"))
    parser.add_argument("--size", type=int, default=28, help="image side (8: digits, 28: MNIST)")
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--blocks", type=int, default=1, help="residual blocks per stage (resnet)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1,
                        help="BLAS and PyTorch intra-op threads (shallow.cnn computes on one core: see the notes)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "gpu"),
                        help="gpu: CuPy against PyTorch CUDA (then also run --device cpu for the CPU numbers)")
    parser.add_argument("--rounds", type=int, default=5, help="processes per library, alternating")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per process")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--tf32", action="store_true",
                        help="let PyTorch's GPU convolutions use TF32 tensor cores (shallow.cnn stays in float32)")
    parser.add_argument("--capture", action="store_true",
                        help="also time shallow.cnn's step as a CapturedStep (one CUDA graph replay per step)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        cfg = json.loads(args.config)
        if args.worker.startswith("ours"):
            answer = worker_ours(cfg, captured=args.worker == "ours:captured")
        else:
            answer = worker_torch(cfg, args.worker.split(":", 1)[1])
        print(json.dumps(answer))
        return 0

    if importlib.util.find_spec("torch") is None:  # else each torch worker failed with a nested traceback
        parser.error("the comparison needs PyTorch: pip install -e '.[bench]' (on a CPU-only machine its CPU "
                     "build, pip install torch==2.13.0+cpu)")
    cfg = {k: getattr(args, k) for k in ("arch", "size", "width", "blocks", "batch", "threads", "steps", "warmup",
                                         "device", "tf32")}
    import numpy as np
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; "
          f"python {platform.python_version()}, numpy {np.__version__}")
    print(f"load average before: {load_average()}")
    print(f"step: {args.arch}, {args.size}x{args.size}x1 images, width {args.width}, batch {args.batch}, float32, "
          f"{args.threads} thread(s), device {args.device}{' (PyTorch with TF32)' if args.tf32 else ''}; "
          f"{args.rounds} alternating processes per library x "
          f"{args.steps} steps")
    kinds = ["ours", *(["ours:captured"] if args.capture else []), "torch:contiguous", "torch:channels_last"]
    times = {k: [] for k in kinds}
    cpus = {k: [] for k in kinds}
    extra = {}
    for _ in range(args.rounds):
        for kind in list(kinds):
            try:
                answer = run_worker(kind, cfg)
            except RuntimeError as error:  # a failed captured step must not cost the other numbers
                if kind == "ours":
                    raise
                print(f"dropped {kind}: {error}")
                kinds.remove(kind)
                continue
            times[kind].append(answer["time"])
            cpus[kind].append(answer["cpu"])
            if kind == "ours:captured":
                extra["captured"] = answer
            else:
                extra.update({k: v for k, v in answer.items() if k not in ("time", "cpu")})
    med = {k: statistics.median(times[k]) for k in kinds}
    med_cpu = {k: statistics.median(cpus[k]) for k in kinds}
    references = [k for k in ("torch:contiguous", "torch:channels_last") if k in kinds]
    if not references:
        raise RuntimeError("no PyTorch step ran: nothing to compare with")
    print(f"load average after:  {load_average()}")
    for kind in kinds:
        ours = "shallow.cnn (cupy)" if args.device == "gpu" else "shallow.cnn (numpy)"
        label = (ours if kind == "ours" else f"{ours[:-1]}, captured)" if kind == "ours:captured"
                 else f"PyTorch {extra.get('version', '')} {kind.split(':')[1]}")
        spread = ", ".join(f"{1e3 * t:.1f}" for t in times[kind])
        print(f"  {label:34s} median {1e3 * med[kind]:8.2f} ms per step, CPU {1e3 * med_cpu[kind]:8.2f} ms   "
              f"(processes: {spread})")
    best = min(references, key=med.get)
    print(f"PyTorch mirror agrees with shallow.cnn to {extra.get('agreement', float('nan')):.1e} (relative, float32)")
    print(f"speed ratio (PyTorch time / shallow.cnn time, PyTorch {best.split(':')[1]}): {med[best] / med['ours']:.2f}x")
    if "ours:captured" in kinds:
        captured = extra["captured"]
        print(f"speed ratio with shallow.cnn's step captured (CapturedStep): {med[best] / med['ours:captured']:.2f}x "
              f"({captured['recorded']} graph(s) recorded{'; ' if captured['warnings'] else ''}"
              f"{'; '.join(captured['warnings'])})")
    best_cpu = min(references, key=med_cpu.get)
    print(f"CPU-time ratio (process CPU seconds, PyTorch {best_cpu.split(':')[1]}; with 1 thread it discounts the "
          f"time a process waited for a core): {med_cpu[best_cpu] / med_cpu['ours']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
