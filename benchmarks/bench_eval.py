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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-fit", type=int, default=10_240)
    ap.add_argument("--n-score", type=int, default=2_048)
    ap.add_argument("--factors", type=int, default=10)
    ap.add_argument("--sk-factors", type=int, default=2, help="factors scikit-learn runs")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

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
