"""Benchmark: ``ident3d.metrics.kernel_r2`` against scikit-learn's grid search, side by side.

Both sides run the Causal3DIdent protocol on the same data: standardise encodings and factors
(fit-part statistics), per factor a 3-fold ``GridSearchCV`` over alpha in {1, 0.1, 0.01,
0.001} x gamma in logspace(-2, 2, 4) of an RBF ``KernelRidge``, refit on all 10,240 fit
samples, R^2 on held-out samples. Data: 10 uniform factors through an invertible nonlinear
map (two random rotations with a LeakyReLU between them) plus a little noise.

scikit-learn repeats the whole search for every factor, so it is timed on ``--sk-factors``
factors (default 2) and its time for all factors is that per-factor time times the number of
factors (printed as "scaled"); scores are compared on the factors both sides ran. Both sides
get ``--threads`` CPU threads (torch threads; threadpoolctl for scikit-learn's BLAS).

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
    from sklearn.kernel_ridge import KernelRidge
    from sklearn.metrics import r2_score
    from sklearn.model_selection import GridSearchCV
    from sklearn.preprocessing import StandardScaler

    t0 = time.perf_counter()
    sx, sy = StandardScaler().fit(h[:n_fit]), StandardScaler().fit(z[:n_fit])
    x, xs = sx.transform(h[:n_fit]), sx.transform(h[n_fit:])
    y, ys = sy.transform(z[:n_fit]), sy.transform(z[n_fit:])
    scores, params = [], []
    for i in factors:
        search = GridSearchCV(
            KernelRidge(kernel="rbf"), {"alpha": list(alphas), "gamma": list(gammas)}, cv=3
        ).fit(x, y[:, i])
        scores.append(float(r2_score(ys[:, i], search.predict(xs))))
        params.append(search.best_params_)
    return time.perf_counter() - t0, scores, params


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

    t0 = time.perf_counter()
    ours = kernel_r2(h, z, n_fit=args.n_fit, n_score=args.n_score)
    t_ours = time.perf_counter() - t0
    print(f"ident3d kernel_r2: {t_ours:.1f} s for {args.factors} factors", flush=True)

    sk_factors = list(range(min(args.sk_factors, args.factors)))
    with threadpool_limits(args.threads):
        t_sk, sk_scores, sk_params = sklearn_side(
            h, z, args.n_fit, sk_factors, KERNEL_ALPHAS, KERNEL_GAMMAS
        )
    per_factor = t_sk / len(sk_factors)
    t_sk_all = per_factor * args.factors
    print(
        f"scikit-learn GridSearchCV(KernelRidge): {t_sk:.1f} s for {len(sk_factors)} factors "
        f"({per_factor:.1f} s per factor; scaled to {args.factors} factors: {t_sk_all:.0f} s)"
    )
    diffs = [abs(ours.per_factor[i] - s) for i, s in zip(sk_factors, sk_scores, strict=True)]
    print()
    print("| factor | ident3d R^2 | sklearn R^2 | abs diff | ident3d (alpha, gamma) | sklearn |")
    print("|---|---|---|---|---|---|")
    for i, s, p in zip(sk_factors, sk_scores, sk_params, strict=True):
        print(
            f"| z{i} | {ours.per_factor[i]:.6f} | {s:.6f} | {abs(ours.per_factor[i] - s):.2e} "
            f"| ({ours.params['alpha'][i]:g}, {ours.params['gamma'][i]:.3g}) "
            f"| ({p['alpha']:g}, {p['gamma']:.3g}) |"
        )
    print()
    print(f"| | seconds ({args.factors} factors) |")
    print("|---|---|")
    print(f"| ident3d kernel_r2 | {t_ours:.1f} |")
    print(f"| scikit-learn (measured on {len(sk_factors)} factors, scaled) | {t_sk_all:.0f} |")
    print(f"| speed-up | {t_sk_all / t_ours:.1f}x |")
    print(f"max |R^2 difference| on the compared factors: {max(diffs):.2e}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "n_fit": args.n_fit,
                    "n_score": args.n_score,
                    "factors": args.factors,
                    "threads": args.threads,
                    "ours_s": t_ours,
                    "sklearn_s_measured": t_sk,
                    "sklearn_factors": len(sk_factors),
                    "sklearn_s_scaled": t_sk_all,
                    "speedup": t_sk_all / t_ours,
                    "ours_r2": ours.per_factor,
                    "sklearn_r2": sk_scores,
                    "max_abs_diff": max(diffs),
                },
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()
