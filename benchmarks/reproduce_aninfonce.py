"""Reproduce the AnInfoNCE experiments (Rusak et al. 2024) and InfoNCE baselines with `ident3d train`.

Experiments (each one `ident3d train` run in OUT_ROOT/<name>, resumable: rerunning the script
continues a run from its last checkpoint):

- ``an-linspace``: AnInfoNCE, Lambda = linspace(5, 25, 10) on the extended sphere.
- ``an-bimodal``: AnInfoNCE, Lambda = 25 (x5), 5 (x5).
- ``nce-linspace``: plain InfoNCE (isotropic, -||a - b||^2 / tau with tau = 2 / mean(Lambda),
  i.e. AnInfoNCE with lambda frozen at the mean precision 15) on the same data as ``an-linspace``.
- ``nce-sphere``: isotropic InfoNCE on the sphere with a vMF conditional (kappa 20) and the
  matched temperature 1 / kappa.

Settings shared by all (chosen for 2 shared CPU cores, see docs/results.md): n = 10, a 3-layer
mixing (seed 0), encoder MLP [100, 200, 200, 100] -> 10 on the unit sphere, batch 1000,
Adam lr 1e-3 (AnInfoNCE's lambda: lr 1e-2), evaluation every 500 steps on 4096 fresh samples.
``--paper`` switches to the papers' encoder widths [10n, 50n, 50n, 50n, 50n, 10n] and lr 1e-4 /
lambda lr 1e-3.

Usage::

    python benchmarks/reproduce_aninfonce.py run an-linspace [--steps 30000] [--out-root runs]
    python benchmarks/reproduce_aninfonce.py report [--out-root runs]   # tables from metrics.jsonl

``report`` prints, per run, the latest evaluation (step, R^2, MCC, learned lambdas matched to the
latents, their mean relative error and rank correlation with the truth, first step with
R^2 >= 0.99) and the per-dimension R^2 of InfoNCE and AnInfoNCE side by side.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

COMMON = [
    "--data", "synthetic", "--n", "10", "--batch-size", "1000", "--eval-every", "500",
    "--checkpoint-every", "500", "--eval-samples", "4096", "--seed", "0",
    "--no-progress",
]  # fmt: skip
FAST = ["--hidden", "100,200,200,100", "--lr", "1e-3"]
PAPER = ["--lr", "1e-4"]
ANISO = ["--space", "extended_sphere", "--conditional", "anisotropic"]

# A stronger anisotropy than the paper's, to test its claim where it should show most:
# Lambda = geomspace(1, 100, 10) (noise std 1.0 down to 0.1), and plain InfoNCE at the
# matched temperature 2 / mean(Lambda).
GEOM = "1,1.6681,2.78256,4.64159,7.74264,12.9155,21.5443,35.9381,59.9484,100"
GEOM_TAU = "0.0805863"


def _an(lambdas: str, *extra: str) -> list[str]:
    """AnInfoNCE on the anisotropic extended-sphere data with precisions ``lambdas``."""
    return [*ANISO, "--lambdas", lambdas, "--loss", "aninfonce", *extra]


def _nce(lambdas: str, tau: str) -> list[str]:
    """Plain InfoNCE (-||a - b||^2 / tau) on the same data as ``_an(lambdas)``."""
    return [*ANISO, "--lambdas", lambdas, "--loss", "infonce", "--similarity", "lp", "--p", "2",
            "--temperature", tau]  # fmt: skip


EXPERIMENTS: dict[str, list[str]] = {
    "an-linspace": _an("linspace"),
    "an-bimodal": _an("bimodal"),
    "an-linspace-cosine": _an("linspace", "--lr-schedule", "cosine"),
    "nce-linspace": _nce("linspace", "0.13333333"),
    "an-geom": _an(GEOM),
    "nce-geom": _nce(GEOM, GEOM_TAU),
    "nce-sphere": [
        "--space",
        "sphere",
        "--conditional",
        "vmf",
        "--kappa",
        "20",
        "--loss",
        "infonce",
        "--similarity",
        "dot",
        "--temperature",
        "0.05",
    ],
}


def command(name: str, steps: int, out: Path, paper: bool, threads: int = 1) -> list[str]:
    """The exact `ident3d train` command line of an experiment."""
    extra = [*(PAPER if paper else FAST), "--threads", str(threads)]
    if "aninfonce" in EXPERIMENTS[name]:
        extra += ["--lambda-lr", "1e-3" if paper else "1e-2"]
    return ["ident3d", "train", *COMMON, *extra, *EXPERIMENTS[name], "--steps", str(steps),
            "--out", str(out)]  # fmt: skip


def run(name: str, steps: int, root: Path, paper: bool, threads: int = 1) -> None:
    out = root / name
    cmd = command(name, steps, out, paper, threads)
    if (out / "config.json").exists():
        cmd = ["ident3d", "train", "--resume", "--steps", str(steps), "--no-progress",
               "--out", str(out)]  # fmt: skip
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ident3d", *cmd[1:]], check=True)
    print(f"wall time {time.perf_counter() - t0:.0f} s", flush=True)


def _evals(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["kind"] == "eval"]


def _fmt(v: float | None, nd: int = 3) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def report(root: Path) -> None:
    print("| run | step | R^2 | MCC | first step R^2 >= 0.99 | first step MCC >= 0.98 | "
          "lambda mean rel. error | lambda rank corr. |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    last: dict[str, dict] = {}
    for name in EXPERIMENTS:
        ev = _evals(root / name)
        if not ev:
            continue
        e = ev[-1]
        last[name] = e
        first = next((r["step"] for r in ev if r["r2"] >= 0.99), None)
        first_mcc = next((r["step"] for r in ev if r["mcc"] >= 0.98), None)
        print(f"| {name} | {e['step']} | {_fmt(e['r2'], 4)} | {_fmt(e['mcc'], 4)} | "
              f"{first or '-'} | {first_mcc or '-'} | {_fmt(e.get('lambda_rel_error'))} | "
              f"{_fmt(e.get('lambda_rank_corr'))} |")  # fmt: skip
    for name, e in last.items():
        if "lambda_matched" in e:
            cfg = json.loads((root / name / "config.json").read_text())
            true = cfg["data"]["lambdas"]
            print(f"\n{name} step {e['step']}: learned lambda (matched to latent) vs true")
            print("| latent | " + " | ".join(str(i) for i in range(len(true))) + " |")
            print("|---" * (len(true) + 1) + "|")
            print("| true | " + " | ".join(f"{v:.1f}" for v in true) + " |")
            print("| learned | " + " | ".join(f"{v:.1f}" for v in e["lambda_matched"]) + " |")
            print(
                "| learned, sorted | " + " | ".join(f"{v:.1f}" for v in sorted(e["lambda"])) + " |"
            )
    for an_name, nce_name in (("an-linspace", "nce-linspace"), ("an-geom", "nce-geom")):
        _side_by_side(root, an_name, nce_name)


def _side_by_side(root: Path, an_name: str, nce_name: str) -> None:
    an, nce = _evals(root / an_name), _evals(root / nce_name)
    common = sorted({r["step"] for r in an} & {r["step"] for r in nce})
    if not common:
        return
    step = common[-1]
    a = next(r for r in an if r["step"] == step)
    b = next(r for r in nce if r["step"] == step)
    cfg = json.loads((root / an_name / "config.json").read_text())
    lam = cfg["data"]["lambdas"]
    print(f"\nper-latent R^2 on the same anisotropic data ({nce_name} vs {an_name}), step {step}")
    print(
        "| latent | Lambda (precision) | noise std 1/sqrt(Lambda) | InfoNCE R^2 | AnInfoNCE R^2 |"
    )
    print("|---|---|---|---|---|")
    for i, lv in enumerate(lam):
        print(
            f"| {i} | {lv:.1f} | {lv**-0.5:.3f} | {b['r2_per_dim'][i]:.4f} | "
            f"{a['r2_per_dim'][i]:.4f} |"
        )
    print(f"| mean | | | {b['r2']:.4f} | {a['r2']:.4f} |")
    print(f"| MCC | | | {b['mcc']:.4f} | {a['mcc']:.4f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    r = sub.add_parser("run", help="run (or resume) one experiment")
    r.add_argument("name", choices=sorted(EXPERIMENTS))
    r.add_argument("--steps", type=int, default=30000)
    r.add_argument("--out-root", type=Path, default=Path("runs"))
    r.add_argument("--paper", action="store_true", help="the papers' encoder widths and lrs")
    r.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p = sub.add_parser("report", help="summarise the runs in --out-root")
    p.add_argument("--out-root", type=Path, default=Path("runs"))
    c = sub.add_parser("commands", help="print the exact ident3d train commands")
    c.add_argument("--steps", type=int, default=30000)
    c.add_argument("--out-root", type=Path, default=Path("runs"))
    c.add_argument("--paper", action="store_true")
    args = ap.parse_args()
    if args.what == "run":
        run(args.name, args.steps, args.out_root, args.paper, args.threads)
    elif args.what == "report":
        report(args.out_root)
    else:
        for name in EXPERIMENTS:
            print(" ".join(command(name, args.steps, args.out_root / name, args.paper)))


if __name__ == "__main__":
    main()
