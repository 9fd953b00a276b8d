"""Where a CNN training step spends its time: forward and backward of each layer, timed separately.

The companion of ``cnn_step.py``: the same architecture and batch, one process, each layer's
forward and backward timed on its own (synchronised on a GPU), medians over ``--steps`` steps.
Printed: one row per layer (its kind and output shape), forward and backward milliseconds, and the
share of the step; then the sum against the timed whole step (their difference is the loss, the
optimiser update and Python between layers).

    python benchmarks/cnn_layers.py                     # CPU, VGG 28x28, width 32, batch 128
    python benchmarks/cnn_layers.py --device gpu --batch 1024

On a GPU this is the step launch by launch (17.8 ms at batch 128 on an H200, 2026-11-29, where the
captured step of ``fit`` takes 3.8 ms, ``cnn_step.py``): the profile of the host's launches, each
layer's share of about 500 of them.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def leaf_layers(layer):
    """The layers of ``layer`` in execution order, descending into Model and Sequential (not Residual)."""
    from shallow import cnn

    if isinstance(layer, cnn.Model):
        return leaf_layers(layer.net)
    if isinstance(layer, cnn.Sequential):
        return [leaf for child in layer.layers for leaf in leaf_layers(child)]
    return [layer]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="vgg", choices=("vgg", "resnet"))
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args(argv)

    from shallow.backend import get_xp, to_device
    from shallow.cnn import SGD, CrossEntropy, build_model
    from shallow.cnn.train import train_step

    model = build_model(args.arch, (args.size, args.size, 1), 10, rng=0, dtype=args.dtype, width=args.width)
    model.to(args.device)
    model.check_inputs = False  # as in cnn_step.py: the batch is checked once, not every step
    rng = np.random.default_rng(0)
    x = to_device(rng.standard_normal((args.batch, args.size, args.size, 1)).astype(args.dtype), args.device)
    y = to_device(rng.integers(0, 10, args.batch), args.device)
    xp = get_xp(x)
    sync = (lambda: xp.cuda.Device().synchronize()) if args.device == "gpu" else (lambda: None)
    loss = CrossEntropy()
    opt = SGD(model.named_parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    layers = leaf_layers(model)

    def timed(fn):
        sync()
        start = time.perf_counter()
        out = fn()
        sync()
        return out, time.perf_counter() - start

    fwd = [[] for _ in layers]
    bwd = [[] for _ in layers]
    shapes = [None] * len(layers)
    whole = []
    for it in range(args.warmup + args.steps):
        keep = it >= args.warmup
        h = x
        for i, layer in enumerate(layers):
            h, t = timed(lambda layer=layer, h=h: layer.forward(h))
            shapes[i] = tuple(h.shape)
            if keep:
                fwd[i].append(t)
        _, g = loss.value_and_grad(h, y, check=False)
        for i in reversed(range(len(layers))):
            g, t = timed(lambda i=i, g=g: layers[i].backward(g, need_input_grad=i > 0))
            if keep:
                bwd[i].append(t)
        _, t = timed(lambda: train_step(model, loss, opt, x, y, check=False))
        if keep:
            whole.append(t)

    # launch-bound or device-bound: the host's time to issue forward + backward + update (with a
    # fixed output gradient, no loss value to wait for) against the same work waited for
    g0 = xp.ones_like(model.forward(x)) / args.batch
    issue, waited = [], []
    for it in range(args.warmup + args.steps):
        sync()
        start = time.perf_counter()
        model.forward(x)
        model.backward(g0, need_input_grad=False)
        opt.step(model.named_gradients())
        issued = time.perf_counter()
        sync()
        if it >= args.warmup:
            issue.append(issued - start)
            waited.append(time.perf_counter() - start)

    med = statistics.median
    total = med(whole)
    print(f"{args.arch} {args.size}x{args.size}, width {args.width}, batch {args.batch}, {args.dtype}, "
          f"device {args.device}; medians over {args.steps} steps")
    print(f"{'layer':<28}{'output shape':<22}{'forward ms':>11}{'backward ms':>12}{'share':>8}")
    layer_sum = 0.0
    for layer, shape, f, b in zip(layers, shapes, fwd, bwd):
        tf, tb = med(f), med(b) if b else 0.0
        layer_sum += tf + tb
        print(f"{type(layer).__name__:<28}{str(shape):<22}{tf * 1e3:>11.2f}{tb * 1e3:>12.2f}"
              f"{(tf + tb) / total:>8.1%}")
    print(f"sum of layers {layer_sum * 1e3:.2f} ms; whole training step {total * 1e3:.2f} ms "
          f"(loss, update and the rest: {(total - layer_sum) * 1e3:.2f} ms)")
    print(f"forward + backward + update: issued by the host in {med(issue) * 1e3:.2f} ms, done in "
          f"{med(waited) * 1e3:.2f} ms (on a GPU, issue close to done means the step waits for launches)")


if __name__ == "__main__":
    main()
