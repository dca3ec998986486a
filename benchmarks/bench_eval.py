"""Benchmark: ``ident3d.metrics.kernel_r2`` against scikit-learn's grid search, side by side.

Both sides run the Causal3DIdent protocol on the same data: standardise encodings and factors
(fit-part statistics), per factor a 3-fold ``GridSearchCV`` over alpha in {1, 0.1, 0.01,
0.001} x gamma in logspace(-2, 2, 4) of an RBF ``KernelRidge``, refit on all 10,240 fit
samples, R^2 on held-out samples. Data: 10 uniform factors through an invertible nonlinear
map (two random rotations with a LeakyReLU between them) plus a little noise.

scikit-learn repeats the whole search for every factor, so it is timed on ``--sk-factors``
factors (default 2) and its time for all factors is that per-factor time times the number of
factors (printed as "scaled"); scores are compared on the factors both sides ran. Both sides
get ``--threads`` CPU threads (torch threads; threadpoolctl for scikit-learn's BLAS). Wall and
process CPU seconds are both printed: on a shared machine the CPU-time ratio is the steadier.

    python benchmarks/bench_eval.py                 # 10,240 fit samples, 2 threads
    python benchmarks/bench_eval.py --n-fit 2048    # a quick run
    python benchmarks/bench_eval.py --gpu-eval      # whole `ident3d eval`, ResNet18, 25,000 images, GPU
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch


def make_data(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Uniform factors through two random rotations with a LeakyReLU(0.2) between them (an
    invertible nonlinear map, like an imperfect encoder), plus a little noise."""
    rng = np.random.default_rng(seed)
    z = rng.uniform(-1, 1, size=(n, d))
    h = z
    for _ in range(2):
        q, r = np.linalg.qr(rng.normal(size=(d, d)))
        h = h @ (q * np.sign(np.diag(r)))
        h = np.where(h > 0, h, 0.2 * h)
    return h + 0.01 * rng.normal(size=h.shape), z


def sklearn_side(h, z, n_fit, factors, alphas, gammas):
    """Per factor: (wall s, CPU s, score, best params), printed as each factor finishes."""
    from sklearn.kernel_ridge import KernelRidge
    from sklearn.metrics import r2_score
    from sklearn.model_selection import GridSearchCV
    from sklearn.preprocessing import StandardScaler

    sx, sy = StandardScaler().fit(h[:n_fit]), StandardScaler().fit(z[:n_fit])
    x, xs = sx.transform(h[:n_fit]), sx.transform(h[n_fit:])
    y, ys = sy.transform(z[:n_fit]), sy.transform(z[n_fit:])
    out = []
    for i in factors:
        w0, c0 = time.perf_counter(), time.process_time()
        search = GridSearchCV(
            KernelRidge(kernel="rbf"), {"alpha": list(alphas), "gamma": list(gammas)}, cv=3
        ).fit(x, y[:, i])
        score = float(r2_score(ys[:, i], search.predict(xs)))
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        print(
            f"  sklearn factor z{i}: {wall:.1f} s wall, {cpu:.1f} s CPU, R^2 {score:.6f}, "
            f"{search.best_params_}",
            flush=True,
        )
        out.append((wall, cpu, score, search.best_params_))
    return out


def write_store(root: str, n: int, size: int, seed: int) -> None:
    """A store of ``n`` uncompressed ``size`` x ``size`` images whose colours and a bright
    square's position follow 10 uniform latents (so an encoder has something to see)."""
    from ident3d.latents import factor_table
    from ident3d.store import ShardWriter, create_dataset

    rng = np.random.default_rng(seed)
    shard = 1000
    create_dataset(root, "images", n, shard, size, size, 10, {"bench": "eval"}, factor_table(),
                   compression="none")  # fmt: skip
    for k in range(0, n, shard):
        m = min(shard, n - k)
        z = rng.uniform(-1, 1, size=(m, 10)).astype(np.float32)
        img = np.empty((m, size, size, 3), np.uint8)
        img[..., 0] = (127 + 120 * z[:, 7])[:, None, None]
        img[..., 1] = (127 + 120 * z[:, 8])[:, None, None]
        img[..., 2] = (127 + 120 * z[:, 9])[:, None, None]
        q = size // 4
        for j in range(m):
            r = int((z[j, 0] + 1) / 2 * (size - q))
            c = int((z[j, 1] + 1) / 2 * (size - q))
            img[j, r : r + q, c : c + q] = 255
        with ShardWriter(root, k // shard, k, m, "images", size, size, 10, compression="none") as w:
            w.write_batch(0, img, z, z)


def gpu_eval(args: argparse.Namespace) -> None:
    """The whole ``ident3d eval`` of a ResNet18 on ``--gpu-n`` images on the GPU (store written
    here, a 2-step run trained here), plus ``kernel_r2`` alone on the GPU."""
    import os
    import tempfile

    from ident3d import eval as ev
    from ident3d.metrics import kernel_r2
    from ident3d.train import resolve_config, train

    assert torch.cuda.is_available(), "--gpu-eval needs CUDA"
    work = args.workdir or tempfile.mkdtemp(prefix="bench_eval_")
    data, run = os.path.join(work, "data"), os.path.join(work, "run")
    t0 = time.perf_counter()
    write_store(data, args.gpu_n, 224, args.seed)
    print(f"wrote {args.gpu_n} images 224 x 224 in {time.perf_counter() - t0:.1f} s", flush=True)
    cfg = resolve_config({"data": {"kind": "dataset", "path": data}, "steps": 2, "batch_size": 64,
                          "loop": {"checkpoint_every": 2, "eval_every": 0, "num_workers": 4,
                                   "device": "cuda"}})  # fmt: skip
    train(cfg, run, progress=False)
    h, z = make_data(args.n_fit + args.n_score, args.factors, args.seed)
    for rep in range(2):  # the first run includes CUDA/cuSOLVER start-up
        torch.cuda.synchronize()
        w0 = time.perf_counter()
        res = kernel_r2(h, z, n_fit=args.n_fit, n_score=args.n_score, device="cuda")
        torch.cuda.synchronize()
        print(f"kernel_r2 on {torch.cuda.get_device_name()} (run {rep + 1}): "
              f"{time.perf_counter() - w0:.2f} s, mean R^2 {res.mean:.6f}", flush=True)  # fmt: skip
    for rep in range(2):
        w0 = time.perf_counter()
        result, _ = ev.evaluate_run(run, data, os.path.join(work, f"report{rep}"), device="cuda",
                                    batch_size=512, num_workers=args.workers, progress=False)  # fmt: skip
        wall = time.perf_counter() - w0
        t = result.report["timing"]
        print(f"ident3d eval, ResNet18, {args.gpu_n} images, run {rep + 1}: {wall:.1f} s wall "
              f"(encode {t['encode_s']:.1f} s, kernel {t['kernel_s']:.1f} s, linear "
              f"{t['linear_s']:.2f} s, mcc {t['mcc_s']:.2f} s; the rest loading the run and "
              f"writing the report and figures)", flush=True)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-fit", type=int, default=10_240)
    ap.add_argument("--n-score", type=int, default=2_048)
    ap.add_argument("--factors", type=int, default=10)
    ap.add_argument("--sk-factors", type=int, default=2, help="factors scikit-learn runs")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--gpu-eval", action="store_true", help="time the whole eval on a GPU")
    ap.add_argument("--gpu-n", type=int, default=25_000, help="images for --gpu-eval")
    ap.add_argument("--workers", type=int, default=8, help="loader workers for --gpu-eval")
    ap.add_argument("--workdir", help="where --gpu-eval writes its store and run")
    args = ap.parse_args()
    if args.gpu_eval:
        gpu_eval(args)
        return

    from threadpoolctl import threadpool_limits

    from ident3d.metrics import KERNEL_ALPHAS, KERNEL_GAMMAS, kernel_r2

    torch.set_num_threads(args.threads)
    h, z = make_data(args.n_fit + args.n_score, args.factors, args.seed)
    print(
        f"kernel_r2 benchmark: {args.n_fit} fit + {args.n_score} scored samples, "
        f"{args.factors} factors, {args.threads} threads, {platform.processor() or platform.machine()}"
    )

    w0, c0 = time.perf_counter(), time.process_time()
    ours = kernel_r2(h, z, n_fit=args.n_fit, n_score=args.n_score)
    t_ours, c_ours = time.perf_counter() - w0, time.process_time() - c0
    print(
        f"ident3d kernel_r2: {t_ours:.1f} s wall, {c_ours:.1f} s CPU for {args.factors} factors",
        flush=True,
    )

    sk_factors = list(range(min(args.sk_factors, args.factors)))
    with threadpool_limits(args.threads):
        sk = sklearn_side(h, z, args.n_fit, sk_factors, KERNEL_ALPHAS, KERNEL_GAMMAS)
    k = len(sk)
    wall_pf = sum(r[0] for r in sk) / k
    cpu_pf = sum(r[1] for r in sk) / k
    sk_wall, sk_cpu = wall_pf * args.factors, cpu_pf * args.factors
    print(
        f"scikit-learn GridSearchCV(KernelRidge): {wall_pf:.1f} s wall, {cpu_pf:.1f} s CPU per "
        f"factor (measured on {k}); scaled to {args.factors} factors: {sk_wall:.0f} s wall, "
        f"{sk_cpu:.0f} s CPU"
    )
    diffs = [abs(ours.per_factor[i] - r[2]) for i, r in zip(sk_factors, sk, strict=True)]
    print()
    print("| factor | ident3d R^2 | sklearn R^2 | abs diff | ident3d (alpha, gamma) | sklearn |")
    print("|---|---|---|---|---|---|")
    for i, r in zip(sk_factors, sk, strict=True):
        p = r[3]
        print(
            f"| z{i} | {ours.per_factor[i]:.6f} | {r[2]:.6f} | {abs(ours.per_factor[i] - r[2]):.2e} "
            f"| ({ours.params['alpha'][i]:g}, {ours.params['gamma'][i]:.3g}) "
            f"| ({p['alpha']:g}, {p['gamma']:.3g}) |"
        )
    print()
    print(f"| {args.factors} factors, {args.threads} threads | wall s | CPU s |")
    print("|---|---|---|")
    print(f"| ident3d kernel_r2 | {t_ours:.1f} | {c_ours:.1f} |")
    print(f"| scikit-learn (measured on {k} factors, scaled) | {sk_wall:.0f} | {sk_cpu:.0f} |")
    print(f"| speed-up | {sk_wall / t_ours:.1f}x | {sk_cpu / c_ours:.1f}x |")
    print(f"max |R^2 difference| on the compared factors: {max(diffs):.2e}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "n_fit": args.n_fit,
                    "n_score": args.n_score,
                    "factors": args.factors,
                    "threads": args.threads,
                    "ours_wall_s": t_ours,
                    "ours_cpu_s": c_ours,
                    "sklearn_factors": k,
                    "sklearn_wall_s_per_factor": wall_pf,
                    "sklearn_cpu_s_per_factor": cpu_pf,
                    "speedup_wall": sk_wall / t_ours,
                    "speedup_cpu": sk_cpu / c_ours,
                    "ours_r2": ours.per_factor,
                    "sklearn_r2": [r[2] for r in sk],
                    "max_abs_diff": max(diffs),
                },
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()
