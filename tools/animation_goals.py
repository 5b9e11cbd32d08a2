"""Issue 22's goals, measured in one process (CPU, 2 threads, float32):

- rig.vertex_mse through the Gram matrix at K=52, V=20000, B*T=4096: the loss against the vertex-space loss
  (both meshes built with einsum, F.mse_loss) and against a float64 reference; forward+backward times of
  ours with the Gram matrix cached, ours with its build inside the timed call, the einsum peer eager and
  torch.compile'd (interleaved rounds, medians), and the extra memory of each (analytic);
- the One Euro filter over 10^6 frames x 52 channels (both derivative variants) and exponential smoothing.

    python tools/animation_goals.py [--rounds 15] [--threads 2]
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from facekernels.animation import Rig
from facekernels.ops import exponential_smoothing, one_euro_filter


def einsum_loss(rig, a, b):
    pred = rig.neutral + torch.einsum("nk,kvc->nvc", a, rig.deltas)
    target = rig.neutral + torch.einsum("nk,kvc->nvc", b, rig.deltas)
    return F.mse_loss(pred, target)


def interleaved(fns, rounds):
    for f in fns.values():
        f()
    samples = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            samples[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    k, v, n = 52, 20000, 4096
    g = torch.Generator().manual_seed(0)
    rig = Rig(torch.randn(v, 3, generator=g), 0.02 * torch.randn(k, v, 3, generator=g))
    w_pred = torch.rand(n, k, generator=g).requires_grad_()
    w_target = torch.rand(n, k, generator=g)

    with torch.no_grad():
        ours = float(rig.vertex_mse(w_pred, w_target))
        peer = float(einsum_loss(rig, w_pred, w_target))
        d = (w_pred - w_target).double()
        exact = float(((d @ rig.deltas.double().reshape(k, -1)) ** 2).sum() / (3 * v * n))
    print(f"vertex_mse K={k} V={v} N={n} float32: gram {ours:.8e}  einsum {peer:.8e}  float64 {exact:.8e}")
    print(f"  |gram - einsum| / einsum = {abs(ours - peer) / peer:.2e}; |gram - f64| / f64 = "
          f"{abs(ours - exact) / exact:.2e}; |einsum - f64| / f64 = {abs(peer - exact) / exact:.2e}")

    def step(loss_fn):
        def run():
            w_pred.grad = None
            loss_fn(w_pred, w_target).backward()
        return run

    def with_build(a, b):
        rig._grams.clear()
        return rig.vertex_mse(a, b)

    compiled = torch.compile(lambda a, b: einsum_loss(rig, a, b), dynamic=False)
    times = interleaved({"gram (cached)": step(rig.vertex_mse), "gram (+ build)": step(with_build),
                         "einsum": step(lambda a, b: einsum_loss(rig, a, b)), "einsum+compile": step(compiled)},
                        args.rounds)
    print(f"forward+backward medians over {args.rounds} interleaved rounds:")
    for name, t in times.items():
        print(f"  {name:16s} {t * 1e3:10.3f} ms   einsum / this {times['einsum'] / t:9.1f}x   "
              f"einsum+compile / this {times['einsum+compile'] / t:9.1f}x")
    print(f"  extra memory: the Gram matrix G, its factor L and [L, L L^T] {4 * k * k * 4} bytes (float32, "
          f"cached) + [N, K] temporaries; einsum: two [N, V, 3] meshes, {2 * n * v * 3 * 4 / 2**20:.0f} MiB, plus their difference")

    x = torch.randn(1, 1_000_000, 52)
    fns = {f"one_euro raw_derivative={raw}": (lambda raw=raw: one_euro_filter(x, 1.0, 0.3, 1.0, rate=60.0,
                                                                             raw_derivative=raw))
           for raw in (False, True)}
    fns["exponential_smoothing"] = lambda: exponential_smoothing(x, 0.3)
    for name, t in interleaved(fns, 7).items():
        print(f"{name:32s} 10^6 frames x 52 channels: {t * 1e3:8.1f} ms (median of 7)")


if __name__ == "__main__":
    main()
