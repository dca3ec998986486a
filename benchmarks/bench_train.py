"""Training throughput: steps/s and images/s of the 3DIdent encoder (ResNet18 from scratch) on
224 x 224 pairs, fed from in-memory synthetic uint8 tensors and from a store dataset, side by
side in one process with the harness's own step (bf16 autocast and channels_last on CUDA,
InfoNCE -||a - b||^2 over both views). Also the data path alone (batches/s, no model) and the
synthetic MLP step of the AnInfoNCE experiments.

Run: ``python benchmarks/bench_train.py [--batch 16] [--steps 4] [--device auto] [--threads 2]``
(``make bench-train``). Prints what it measured on this machine; the ratio "loader cost" is
1 - (store images/s) / (synthetic images/s), measured in the same run.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def make_store(root: Path, n: int, size: int) -> None:
    """A pairs store of ``n`` random 224 x 224 pairs (random pixels: the worst case for the
    store's compression)."""
    from ident3d.store import ShardWriter, create_dataset, shard_range

    rng = np.random.default_rng(0)
    manifest = create_dataset(root, "pairs", n, 64, size, size, 10, config={"bench": True})
    for k in range(manifest["num_shards"]):
        start, count = shard_range(manifest, k)
        with ShardWriter(root, k, start, count, "pairs", size, size, 10) as w:
            imgs = rng.integers(0, 256, (count, 2, size, size, 3), dtype=np.uint8)
            raw = rng.uniform(-1, 1, (count, 2, 10)).astype(np.float32)
            w.write_batch(0, imgs, raw, np.zeros((count, 2, 10), np.float32))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_steps(next_batch, device: torch.device, batch: int, steps: int, warmup: int) -> float:
    """Seconds per training step of ResNet18 + InfoNCE with batches from ``next_batch``."""
    from ident3d.losses import InfoNCE
    from ident3d.models import build_encoder, default_model_spec

    torch.manual_seed(0)
    enc = build_encoder(default_model_spec("torchvision", 10)).to(device)
    enc = enc.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(enc.parameters(), lr=1e-4)
    loss_fn = InfoNCE("lp", p=2)
    amp = device.type == "cuda"
    t0 = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            t0 = time.perf_counter()
        x1, x2 = next_batch(i)
        with torch.autocast(device.type, torch.bfloat16, enabled=amp):
            h = enc(torch.cat([x1, x2]))
        loss = loss_fn(h[:batch].float(), h[batch:].float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(device)
    return (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=16, help="pairs per step")
    ap.add_argument("--steps", type=int, default=4, help="timed steps per source")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers (store path)")
    args = ap.parse_args()
    from ident3d.train import DatasetSource, pick_device, resolve_config

    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print(f"device: {device} ({name or 'cpu'}); CPU cores visible: {os.cpu_count()}; "
          f"torch threads: {torch.get_num_threads()}; torch {torch.__version__}")  # fmt: skip
    if device.type != "cuda":
        print("no GPU on this machine: CPU figures only (the GPU path is the same code)")
    b, size = args.batch, args.size
    n_pairs = max(4 * b, 2 * (args.warmup + args.steps) * b)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "pairs"
        t = time.perf_counter()
        make_store(root, n_pairs, size)
        print(
            f"store: {n_pairs} random pairs of {size}x{size} written in {time.perf_counter() - t:.1f} s"
        )
        cfg = resolve_config({
            "seed": 0, "steps": 2 * (args.warmup + args.steps), "batch_size": b,
            "data": {"kind": "dataset", "path": str(root), "pairs": "exact", "resident": False},
            "loop": {"num_workers": args.workers, "device": str(device)},
        })  # fmt: skip
        src = DatasetSource(cfg, device)
        g = torch.Generator().manual_seed(0)
        fake = [
            torch.randint(0, 256, (b, 3, size, size), dtype=torch.uint8, generator=g)
            .to(device)
            .contiguous(memory_format=torch.channels_last)
            for _ in range(2)
        ]

        def synthetic(i: int) -> tuple[torch.Tensor, torch.Tensor]:
            # the same preprocessing as the store path (normalise, channels_last)
            return src._prep(fake[0]), src._prep(fake[1])

        # data path alone
        t = time.perf_counter()
        k = 0
        loader_src = DatasetSource(cfg, device)
        for i in range(args.warmup + args.steps):
            loader_src.next_batch(i)
            k += 1
        _sync(device)
        dt = time.perf_counter() - t
        print(f"store loader alone: {k / dt:.2f} batches/s = {2 * b * k / dt:.0f} images/s "
              f"({args.workers} workers, first batch included)")  # fmt: skip
        loader_src.close()
        # interleaved twice (synthetic, store, synthetic, store); the faster of the two rounds
        # of each source is reported, so neither pays alone for one-off costs or load spikes
        best = {"synthetic tensors": math.inf, "store dataset": math.inf}
        offset = 0
        for _ in range(2):
            sec = bench_steps(synthetic, device, b, args.steps, args.warmup)
            best["synthetic tensors"] = min(best["synthetic tensors"], sec)
            start = offset
            sec = bench_steps(lambda i, s=start: src.next_batch(s + i), device, b, args.steps,
                              args.warmup)  # fmt: skip
            best["store dataset"] = min(best["store dataset"], sec)
            offset += args.warmup + args.steps
        for label, sec in best.items():
            rows.append((label, 1.0 / sec, 2 * b / sec))
        src.close()
    print(f"\nResNet18 from scratch, {size}x{size}, batch {b} pairs ({2 * b} images) per step, "
          f"{args.steps} timed steps after {args.warmup} warm-up")  # fmt: skip
    print("| source | steps/s | images/s |")
    print("|---|---|---|")
    for label, sps, ips in rows:
        print(f"| {label} | {sps:.3f} | {ips:.1f} |")
    cost = 1.0 - rows[1][2] / rows[0][2]
    print(f"loader cost against synthetic tensors: {100 * cost:.1f}% (same run)")

    # the synthetic MLP step (AnInfoNCE experiments)
    from ident3d.losses import AnInfoNCE
    from ident3d.models import build_encoder
    from ident3d.synthetic import SyntheticDGP, SyntheticSpec

    dgp = SyntheticDGP(SyntheticSpec(space="extended_sphere", conditional="anisotropic",
                                     lambdas="linspace"), device)  # fmt: skip
    print("\nsynthetic AnInfoNCE step (n = 10, batch 1000, fresh samples on the device)")
    print("| encoder | steps/s |")
    print("|---|---|")
    for hidden in ([100, 500, 500, 500, 500, 100], [100, 200, 200, 100]):
        enc = build_encoder({"kind": "mlp", "n_in": 10, "n_out": 10, "hidden": hidden,
                             "constraint": "sphere"}).to(device)  # fmt: skip
        loss_fn = AnInfoNCE(10).to(device)
        opt = torch.optim.Adam([*enc.parameters(), *loss_fn.parameters()], lr=1e-4)
        gen = torch.Generator(device=device).manual_seed(0)
        steps = 10
        for i in range(steps + 2):
            if i == 2:
                _sync(device)
                t = time.perf_counter()
            _, _, x1, x2 = dgp.sample_pairs(1000, gen)
            h = enc(torch.cat([x1, x2]))
            loss = loss_fn(h[:1000], h[1000:])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        _sync(device)
        print(f"| MLP {hidden} | {steps / (time.perf_counter() - t):.2f} |")


if __name__ == "__main__":
    main()
