"""``make demo``: the whole pipeline on small defaults, with the real commands.

Renders a small dataset of exact image pairs and a held-out test set of single images with
Blender, trains a ResNet18 with InfoNCE on the pairs for a short while, evaluates it on the
test set and prints the scores and where every output is. Each step is the ``ident3d``
command a user would type; the demo prints it before running it.

Run ``python -m ident3d.demo --help`` for the sizes; ``--synthetic`` runs the Blender-free
variant (synthetic AnInfoNCE data) for machines without the ``render`` extra.
"""

from __future__ import annotations

import argparse
import importlib.util
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path


def _run(args: list[str]) -> None:
    cmd = ["ident3d", *args]
    print(f"\n$ {shlex.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "ident3d", *args], check=False)
    if proc.returncode != 0:
        print(f"demo: step failed with exit status {proc.returncode}: {shlex.join(cmd)}")
        sys.exit(proc.returncode or 1)
    print(f"  ({time.perf_counter() - t0:.1f} s)", flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m ident3d.demo", description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("demo-output"), help="output folder")
    ap.add_argument("--n-train", type=int, default=1024, help="training pairs to render")
    ap.add_argument("--n-test", type=int, default=512, help="test images to render")
    ap.add_argument("--resolution", type=int, default=64, help="image side in pixels")
    ap.add_argument("--steps", type=int, default=300, help="training steps")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2, help="render worker processes")
    ap.add_argument(
        "--synthetic",
        action="store_true",
        help="skip Blender: train AnInfoNCE on synthetic data and evaluate on fresh samples",
    )
    a = ap.parse_args(argv)
    out: Path = a.out
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if a.synthetic:
        run = out / "run-synthetic"
        shutil.rmtree(run, ignore_errors=True)  # the demo's own earlier run
        _run(
            [
                "train",
                "--data",
                "synthetic",
                "--loss",
                "aninfonce",
                "--steps",
                str(a.steps),
                "--batch-size",
                "512",
                "--seed",
                "0",
                "--out",
                str(run),
            ]
        )
        _run(["eval", "--run", str(run), "--data", "synthetic", "--out", str(out / "eval")])
    else:
        if importlib.util.find_spec("bpy") is None:
            print(
                "demo: Blender (bpy) is not installed; `make demo` installs it, or run "
                "`pip install 'ident3d[render]'` (or use --synthetic)"
            )
            sys.exit(2)
        train, test, run = out / "train", out / "test", out / "run"
        common = [
            "--quality",
            "fast",
            "--resolution",
            str(a.resolution),
            "--workers",
            str(a.workers),
            # box mode: its raw latents are the 10 named factors, so the report's table reads
            # per factor (the default periodic mode scores 3 positions + 8 sphere coordinates)
            "--mode",
            "box",
            "--overwrite",
        ]
        _run(
            [
                "render",
                "--out",
                str(train),
                "--n",
                str(a.n_train),
                "--pairs",
                "--conditional",
                "normal",
                "--sigma",
                "0.1",
                "--seed",
                "0",
                *common,
            ]
        )
        _run(
            [
                "render",
                "--out",
                str(test),
                "--n",
                str(a.n_test),
                "--singles",
                "--seed",
                "1",
                *common,
            ]
        )
        _run(["verify", str(train)])
        shutil.rmtree(run, ignore_errors=True)  # the demo's own earlier run
        _run(
            [
                "train",
                "--data",
                str(train),
                "--loss",
                "infonce",
                "--steps",
                str(a.steps),
                "--batch-size",
                str(a.batch_size),
                "--seed",
                "0",
                "--out",
                str(run),
                "--eval-every",
                "0",
            ]
        )
        _run(["eval", "--run", str(run), "--data", str(test), "--out", str(out / "eval")])
    minutes = (time.perf_counter() - t0) / 60
    print(f"\ndemo finished in {minutes:.1f} min. Outputs under {out.resolve()}:")
    for p in sorted(out.iterdir()):
        print(f"  {p}")
    print(f"Scores: {out / 'eval' / 'report.md'} (figures: {out / 'eval'}/*.png)")


if __name__ == "__main__":
    main()
