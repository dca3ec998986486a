"""The training harness: contrastive encoders on synthetic data or on a stored dataset.

A run is driven by one *resolved config* (a JSON-ready dict, written to ``config.json``):

```
{"format": "ident3d-run/1", "seed": 0, "steps": 30000, "batch_size": 1000,
 "data":  {"kind": "synthetic", n, space, marginal, conditional, sigma, kappa, lambdas, ...}
          | {"kind": "dataset", "path": DIR, "pairs": "exact"|"knn", "knn_conditional",
            "knn_sigma", "mean", "std", "eval_path", "resident", "n_latents", "size"},
 "model": {"kind": "mlp"|"torchvision", ...},          # see ident3d.models
 "loss":  {"name": "infonce"|"aninfonce"|"ensemble", ...},  # see ident3d.losses
 "optim": {"lr": 1e-4, "lambda_lr": 1e-3, "weight_decay": 0.0, "schedule": "constant",
           "warmup_steps": 0, "min_lr_ratio": 0.0},
 "loop":  {"checkpoint_every", "eval_every", "eval_samples", "log_every", "device", "amp",
           "compile", "channels_last", "num_workers"}}
```

The run directory holds ``config.json``, ``metrics.jsonl`` (one JSON object per line:
``{"kind": "train", "step", "loss", "mi_bound", "lambda"?}`` for every step, and
``{"kind": "eval", "step", "r2", "mcc", "r2_per_dim", ...}`` at every evaluation) and
``checkpoints/step-<8 digits>.pt`` plus ``checkpoints/last.pt``. Checkpoints are plain dicts
of tensors, numbers, strings and lists (``torch.load(..., weights_only=True)`` reads them) and
hold everything needed to continue bit for bit: the encoder, the loss parameters (AnInfoNCE's
``theta``), both optimisers, the global torch RNG, the data generator's state and the length of
``metrics.jsonl`` at that step.

:func:`load_run` turns a run directory or a checkpoint back into an encoder (eval mode), its
config, the learned lambdas and, for synthetic runs, the data-generating process.
"""

from __future__ import annotations

import copy
import io
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ident3d.errors import UsageError
from ident3d.losses import ContrastiveLoss, EnsembleLoss, build_loss, mi_lower_bound
from ident3d.models import build_encoder, default_model_spec
from ident3d.synthetic import SyntheticDGP, SyntheticSpec, build_dgp, lambda_preset

RUN_FORMAT = "ident3d-run/1"
SCHEDULES = ("constant", "cosine")
CKPT_FORMAT = "ident3d-checkpoint/1"

# ----------------------------------------------------------------------------- defaults


def default_config(data_kind: str = "synthetic", loss: str = "infonce") -> dict[str, Any]:
    """The papers' defaults for a data kind (``synthetic`` or ``dataset``) and loss.

    - synthetic InfoNCE (Zimmermann et al. 2021): n = 10 on the unit sphere, uniform marginal,
      vMF conditional with kappa = 1 / 0.05 = 20, the [10n, 50n, 50n, 50n, 50n, 10n] MLP with
      outputs on the unit sphere, dot-product similarity at the matched temperature
      1 / kappa = 0.05, batch 6144, Adam lr 1e-4.
    - synthetic AnInfoNCE (Rusak et al. 2024): the extended sphere (ext_tol 0.1), anisotropic
      conditional with Lambda = linspace(5, 25, 10), encodings on the unit sphere, lambda =
      softplus(theta) with its own Adam at lr 1e-3, batch 1000, lr 1e-4.
    - dataset: ResNet18 from scratch (head of 10n features, LeakyReLU, Linear to n), batch 512,
      Adam lr 1e-4, InfoNCE with -||a - b||_2^2 at temperature 1.0.

    All: 30,000 steps, a checkpoint and an evaluation (linear R^2 and MCC on 4096 held-out
    samples) every 1000 steps.
    """
    if data_kind not in ("synthetic", "dataset"):
        raise UsageError(f"unknown data kind {data_kind!r}")
    cfg: dict[str, Any] = {
        "format": RUN_FORMAT,
        "seed": 0,
        "steps": 30000,
        "batch_size": 512,
        "optim": {
            "lr": 1e-4,
            "lambda_lr": 1e-3,
            "weight_decay": 0.0,
            "schedule": "constant",
            "warmup_steps": 0,
            "min_lr_ratio": 0.0,
        },
        "loop": {
            "checkpoint_every": 1000,
            "eval_every": 1000,
            "eval_samples": 4096,
            "log_every": 50,
            "device": "auto",
            "amp": "auto",
            "compile": False,
            "channels_last": True,
            "num_workers": 2,
            "threads": 0,
        },
    }
    if loss == "aninfonce":
        cfg["loss"] = {
            "name": "aninfonce",
            "n": 10,
            "theta_init_std": 0.1,
            "negatives": "both",
            "symmetric": True,
            "hard_negative_beta": 0.0,
        }
    elif loss == "ensemble":
        cfg["loss"] = {"name": "ensemble", "members": []}
    else:
        cfg["loss"] = {
            "name": loss,
            "similarity": "lp",
            "p": 2.0,
            "temperature": 1.0,
            "negatives": "both",
            "symmetric": True,
            "hard_negative_beta": 0.0,
        }
    if data_kind == "synthetic":
        spec = SyntheticSpec().to_dict()
        model = default_model_spec("mlp", 10)
        model["constraint"] = "sphere"
        if loss == "aninfonce":
            spec.update(space="extended_sphere", conditional="anisotropic", lambdas="linspace")
            cfg["batch_size"] = 1000
        else:
            spec.update(space="sphere", conditional="vmf", kappa=20.0)
            cfg["batch_size"] = 6144
            if loss == "infonce":
                cfg["loss"].update(similarity="dot", temperature=0.05)
        cfg["data"] = {"kind": "synthetic", **spec}
        cfg["model"] = model
    else:
        cfg["data"] = {
            "kind": "dataset",
            "path": None,
            "pairs": "auto",
            "knn_conditional": "normal",
            "knn_sigma": 0.1,
            "mean": None,
            "std": None,
            "eval_path": None,
            "resident": "auto",
        }
        cfg["model"] = default_model_spec("torchvision", 10)
    return cfg


def deep_merge(
    base: dict[str, Any], over: dict[str, Any], where: str = "", strict: bool = True
) -> dict[str, Any]:
    """``base`` updated by ``over`` recursively; with ``strict`` an unknown key is an error."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        name = f"{where}{k}"
        if strict and k not in out:
            raise UsageError(f"unknown config option {name!r}")
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            open_keys = k in ("members",) or name in ("model",)
            out[k] = deep_merge(out[k], v, f"{name}.", strict and not open_keys)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file (same structure as ``config.json``)."""
    import tomllib

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"config file {p} does not exist")
    try:
        return tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config file {p} is not valid TOML: {exc}") from None


def resolve_config(user: dict[str, Any]) -> dict[str, Any]:
    """Merge user settings (from a TOML file and flags) over the defaults they select, fill in
    derived values and validate. The result is what ``config.json`` holds."""
    data = dict(user.get("data") or {})
    kind = data.get("kind") or ("dataset" if data.get("path") else "synthetic")
    data["kind"] = kind
    loss_name = (user.get("loss") or {}).get("name", "infonce")
    if kind == "synthetic" and isinstance(data.get("lambdas"), str) and "conditional" not in data:
        data["conditional"] = "anisotropic"
    base = default_config(kind, loss_name)
    cfg = deep_merge(base, {**user, "data": data})
    cfg["format"] = RUN_FORMAT
    for key in ("seed", "steps", "batch_size"):
        cfg[key] = int(cfg[key])
    if cfg["steps"] < 1:
        raise UsageError(f"--steps must be at least 1, got {cfg['steps']}")
    if cfg["batch_size"] < 2:
        raise UsageError(f"--batch-size must be at least 2, got {cfg['batch_size']}")
    optim = cfg["optim"]
    if optim.get("schedule", "constant") not in SCHEDULES:
        raise UsageError(
            f"unknown learning-rate schedule {optim['schedule']!r}; choose one of "
            + ", ".join(SCHEDULES)
        )
    if int(optim.get("warmup_steps", 0)) < 0:
        raise UsageError(f"--warmup-steps must be >= 0, got {optim['warmup_steps']}")
    if not 0.0 <= float(optim.get("min_lr_ratio", 0.0)) <= 1.0:
        raise UsageError(f"min_lr_ratio must lie in [0, 1], got {optim['min_lr_ratio']}")
    loop = cfg["loop"]
    for key in ("checkpoint_every", "eval_every", "log_every"):
        if int(loop[key]) < 0:
            raise UsageError(f"{key} must be >= 0, got {loop[key]}")
    if cfg["data"]["kind"] == "synthetic":
        d = cfg["data"]
        if isinstance(d.get("lambdas"), str):
            n_act = d["n"] if d.get("dims") is None else len(d["dims"])
            d["lambdas"] = lambda_preset(d["lambdas"], n_act)
        spec = SyntheticSpec.from_dict(d)
        spec.validate()
        n = spec.n
        m = cfg["model"]
        if m.get("kind") == "mlp":
            if "hidden" not in (user.get("model") or {}):
                m["hidden"] = [10 * n, 50 * n, 50 * n, 50 * n, 50 * n, 10 * n]
            m["n_in"] = n
            m.setdefault("n_out", n)
            if "n_out" not in (user.get("model") or {}):
                m["n_out"] = n
    else:
        _resolve_dataset(cfg, user)
    if cfg["loss"]["name"] == "aninfonce" and "n" not in (user.get("loss") or {}):
        cfg["loss"]["n"] = int(cfg["model"]["n_out"])
    build_loss(cfg["loss"])  # validates the loss options
    return cfg


def _open_training_dataset(d: dict[str, Any], seed: int) -> Any:
    """The torch dataset of a ``dataset`` data section: exact pairs or kNN pairs."""
    from ident3d import data as data_mod

    path = d.get("path")
    if not path or not Path(path).exists():
        raise UsageError(f"dataset {path} does not exist")
    if d["pairs"] == "exact":
        return data_mod.PairDataset(path)
    return data_mod.KNNPairDataset(
        path, conditional=d["knn_conditional"], sigma=float(d["knn_sigma"]), seed=seed
    )


def _resolve_dataset(cfg: dict[str, Any], user: dict[str, Any]) -> None:
    """Fill in a dataset run's pair mode, normalisation and latent dimension from the data."""
    from ident3d import data as data_mod

    d = cfg["data"]
    path = d.get("path")
    if not path or not Path(path).exists():
        raise UsageError(f"dataset {path} does not exist")
    try:
        data_mod.detect_layout(path)
    except FileNotFoundError:
        raise UsageError(f"{path} is not a dataset (no manifest.json or original layout)") from None
    try:
        ds = data_mod.ImageDataset(path)
        kind = "images"
    except UsageError:
        ds = data_mod.PairDataset(path)
        kind = "pairs"
    pairs = d.get("pairs", "auto")
    if pairs == "auto":
        pairs = "exact" if kind == "pairs" else "knn"
    if pairs == "exact" and kind != "pairs":
        raise UsageError(
            f"{path} holds single images, not rendered pairs: a pair loss needs --pairs knn "
            "(nearest-neighbour pairs) or a pairs dataset"
        )
    if pairs == "knn" and kind != "images":
        raise UsageError(f"{path} holds rendered pairs: use --pairs exact (or auto)")
    if pairs not in ("exact", "knn"):
        raise UsageError(f"unknown pair mode {pairs!r}; choose auto, exact or knn")
    d["pairs"] = pairs
    n = len(ds)
    if cfg["batch_size"] > n:
        raise UsageError(f"--batch-size {cfg['batch_size']} is larger than the dataset ({n} items)")
    if d.get("mean") is None or d.get("std") is None:
        d["mean"] = [float(v) for v in ds.mean]
        d["std"] = [float(v) for v in ds.std]
    zdim = int(ds.latents.shape[-1])
    d["n_latents"] = zdim
    d["size"] = n
    if d.get("eval_path") is not None and not Path(d["eval_path"]).exists():
        raise UsageError(f"evaluation dataset {d['eval_path']} does not exist")
    m = cfg["model"]
    if "n_out" not in (user.get("model") or {}):
        m["n_out"] = zdim
        if "head_features" not in (user.get("model") or {}):
            m["head_features"] = 10 * zdim


# ----------------------------------------------------------------------------- helpers


def _atomic_write_bytes(path: Path, payload: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _atomic_torch_save(obj: Any, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    _atomic_write_bytes(path, buf.getvalue())


def _stream_seed(seed: int, stream: int) -> int:
    return int(np.random.SeedSequence(int(seed), spawn_key=(int(stream),)).generate_state(1)[0])


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {name!r} requested but CUDA is not available")
    return dev


def score(
    h: np.ndarray,
    z: np.ndarray,
    learned_lambdas: np.ndarray | None = None,
    true_lambdas: np.ndarray | None = None,
) -> dict[str, Any]:
    """The in-loop scores of encodings ``h`` against latents ``z`` with :mod:`ident3d.metrics`:
    linear R^2 (OLS fitted on the first half, scored on the second; mean and per latent), the
    Pearson MCC with its matching (``match[i]`` = encoder dim of latent ``i``) and, for
    AnInfoNCE on anisotropic data, the learned lambdas against the true Lambda."""
    from ident3d import metrics

    r2 = metrics.linear_r2(h, z)
    m = metrics.mcc(h, z)
    out: dict[str, Any] = {
        "r2": r2.mean,
        "r2_per_dim": r2.per_factor,
        "mcc": m.mean,
        "match": m.matching,
    }
    if learned_lambdas is not None:
        out["lambda"] = [float(v) for v in learned_lambdas]
        if true_lambdas is not None and len(true_lambdas) == len(learned_lambdas):
            lam = metrics.compare_lambdas(learned_lambdas, true_lambdas, m.matching)
            out["lambda_matched"] = lam.learned_matched
            out["lambda_rel_error"] = lam.mean_relative_error
            out["lambda_sorted_rel_error"] = lam.mean_sorted_relative_error
            out["lambda_rank_corr"] = lam.rank_correlation
    return out


# ----------------------------------------------------------------------------- data sources


class SyntheticSource:
    """Fresh pairs every step from a :class:`SyntheticDGP`, drawn on the training device."""

    def __init__(
        self,
        cfg: dict[str, Any],
        device: torch.device,
        rank: int = 0,
        mixing_state: dict[str, torch.Tensor] | None = None,
        world: int = 1,
    ) -> None:
        self.dgp = build_dgp(cfg["data"], device, mixing_state)
        self.device = device
        self.batch = int(cfg["batch_size"]) // world
        self.gen = torch.Generator(device=device)
        self.gen.manual_seed(_stream_seed(cfg["seed"], 1 + rank))
        self.eval_seed = _stream_seed(cfg["seed"], 1000)
        self.eval_samples = int(cfg["loop"]["eval_samples"])
        self._eval: tuple[torch.Tensor, torch.Tensor] | None = None

    def next_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        _, _, x1, x2 = self.dgp.sample_pairs(self.batch, self.gen)
        return x1, x2

    def eval_set(self) -> tuple[torch.Tensor, np.ndarray]:
        if self._eval is None:
            g = torch.Generator(device=self.device)
            g.manual_seed(self.eval_seed)
            z, x = self.dgp.sample(self.eval_samples, g)
            self._eval = (x, z)
        x, z = self._eval
        return x, z.double().cpu().numpy()

    def encode_eval(self, encoder: nn.Module, amp: bool) -> torch.Tensor:
        x, _ = self.eval_set()
        outs = []
        for xb in torch.split(x, 1024):
            with torch.autocast(self.device.type, torch.bfloat16, enabled=amp):
                outs.append(encoder(xb).float())
        return torch.cat(outs)

    def state(self) -> dict[str, Any]:
        return {"data_generator": self.gen.get_state()}

    def load_state(self, st: dict[str, Any]) -> None:
        self.gen.set_state(st["data_generator"])

    def extra_checkpoint(self) -> dict[str, Any]:
        return {"mixing": {k: v.detach().cpu() for k, v in self.dgp.mixing.state_dict().items()}}

    def close(self) -> None:
        pass


class _StepBatches(torch.utils.data.Sampler):
    """Batches of item indices for steps ``start, start + 1, ...``: step ``s`` is batch
    ``s mod (N // B)`` of epoch ``s // (N // B)`` of a seeded per-epoch shuffle (kNN datasets
    get ``(epoch, i)`` items), so the data position is a function of the step alone."""

    def __init__(
        self,
        n: int,
        batch: int,
        seed: int,
        start: int,
        stop: int,
        rank: int,
        world: int,
        with_epoch: bool,
    ) -> None:
        self.n, self.batch, self.seed = n, batch, seed
        self.start, self.stop, self.rank, self.world = start, stop, rank, world
        self.with_epoch = with_epoch
        self.per_epoch = n // (batch * world)

    def __len__(self) -> int:
        return self.stop - self.start

    def indices(self, step: int) -> list[Any]:
        from ident3d.data import EpochSampler

        epoch, j = divmod(step, self.per_epoch)
        order = EpochSampler(self.n, shuffle=True, seed=self.seed).order(epoch)
        lo = (j * self.world + self.rank) * self.batch
        idx = order[lo : lo + self.batch].tolist()
        return [(epoch, i) for i in idx] if self.with_epoch else idx

    def __iter__(self) -> Any:
        for s in range(self.start, self.stop):
            yield self.indices(s)


class DatasetSource:
    """Pairs from a stored dataset (exact rendered pairs or kNN pairs of i.i.d. renders),
    loaded by DataLoader workers as uint8 and normalised on the device; or, with the
    GPU-resident path, served from one uint8 tensor on the device."""

    def __init__(
        self,
        cfg: dict[str, Any],
        device: torch.device,
        rank: int = 0,
        world: int = 1,
        start_step: int = 0,
    ) -> None:
        from ident3d import data as data_mod

        d = cfg["data"]
        self.cfg, self.device = cfg, device
        self.seed = int(cfg["seed"])
        self.batch = int(cfg["batch_size"]) // world
        self.eval_samples = int(cfg["loop"]["eval_samples"])
        resident = d.get("resident", "auto")
        if resident == "auto":
            resident = device.type == "cuda" and _fits_on_device(d, device)
        self.resident = bool(resident)
        self.norm = data_mod.Normalize(d["mean"], d["std"]).to(device)
        self.channels_last = bool(cfg["loop"].get("channels_last", True))
        if self.resident:
            mode = "pairs" if d["pairs"] == "exact" else "knn"
            self.gpu = data_mod.GPUDataset(
                d["path"],
                device,
                mode=mode,
                conditional=d["knn_conditional"],
                sigma=float(d["knn_sigma"]),
                seed=self.seed,
            )
            n = len(self.gpu)
            self.steps = _StepBatches(
                n, self.batch, self.seed, start_step, int(cfg["steps"]), rank, world, False
            )
            self._it = None
        else:
            ds = _open_training_dataset(d, self.seed)
            n = len(ds)
            self.steps = _StepBatches(
                n,
                self.batch,
                self.seed,
                start_step,
                int(cfg["steps"]),
                rank,
                world,
                d["pairs"] == "knn",
            )
            workers = int(cfg["loop"].get("num_workers", 0))
            kw: dict[str, Any] = {}
            if workers > 0:
                kw = {"persistent_workers": False, "prefetch_factor": 4}
            loader = torch.utils.data.DataLoader(
                ds,
                batch_sampler=self.steps,
                num_workers=workers,
                collate_fn=data_mod.collate,
                pin_memory=device.type == "cuda",
                **kw,
            )
            self._it = iter(loader)
        if self.steps.per_epoch < 1:
            raise UsageError(
                f"--batch-size {cfg['batch_size']} is larger than the dataset ({n} items)"
            )
        self._eval: tuple[torch.Tensor, np.ndarray] | None = None

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        f = self.norm(x)
        if self.channels_last:
            f = f.contiguous(memory_format=torch.channels_last)
        return f

    def next_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.resident:
            idx = self.steps.indices(step)
            epoch = step // self.steps.per_epoch
            x1, x2, _, _ = self.gpu.get_batch(idx, epoch)
        else:
            assert self._it is not None
            x1, x2, _, _ = next(self._it)
        return self._prep(x1), self._prep(x2)

    def eval_set(self) -> tuple[torch.Tensor, np.ndarray]:
        """The first ``eval_samples`` images of ``eval_path`` (or of the training set; pairs:
        the first view) with their latents; kept as uint8 and preprocessed per chunk."""
        if self._eval is None:
            from ident3d import data as data_mod

            d = self.cfg["data"]
            path = d.get("eval_path") or d["path"]
            try:
                ds: Any = data_mod.ImageDataset(path)
                k = min(self.eval_samples, len(ds))
                x, z = ds.__getitems__(list(range(k))).batch[:2]
            except UsageError:
                ds = data_mod.PairDataset(path)
                k = min(self.eval_samples, len(ds))
                x, _, z, _ = ds.__getitems__(list(range(k))).batch
            self._eval = (x.clone(), z.double().numpy())
        return self._eval

    def encode_eval(self, encoder: nn.Module, amp: bool) -> torch.Tensor:
        x, _ = self.eval_set()
        outs = []
        for xb in torch.split(x, 256):
            with torch.autocast(self.device.type, torch.bfloat16, enabled=amp):
                outs.append(encoder(self._prep(xb)).float())
        return torch.cat(outs)

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, st: dict[str, Any]) -> None:
        pass

    def extra_checkpoint(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        self._it = None


def _fits_on_device(d: dict[str, Any], device: torch.device) -> bool:
    """Whether the dataset's images take under 40% of the device's free memory."""
    try:
        free, _ = torch.cuda.mem_get_info(device)
    except RuntimeError:
        return False
    from ident3d import data as data_mod

    ds = (
        data_mod.PairDataset(d["path"])
        if d["pairs"] == "exact"
        else data_mod.ImageDataset(d["path"])
    )
    per = int(np.prod(ds.source.image_shape))
    return per * len(ds) < 0.4 * free


def _make_source(
    cfg: dict[str, Any], device: torch.device, rank: int, world: int, ckpt: dict[str, Any] | None
) -> Any:
    if cfg["data"]["kind"] == "synthetic":
        mixing = ckpt.get("mixing") if ckpt else None
        return SyntheticSource(cfg, device, rank, mixing, world)
    start = int(ckpt["step"]) if ckpt else 0
    return DatasetSource(cfg, device, rank, world, start)


# ----------------------------------------------------------------------------- the loop


@dataclass
class _Dist:
    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device_name: str) -> tuple[_Dist, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist(), pick_device(device_name)
    import torch.distributed as dist

    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return _Dist(world, rank, local), device


def _use_amp(cfg: dict[str, Any], device: torch.device) -> bool:
    amp = cfg["loop"].get("amp", "auto")
    if amp == "auto":
        return device.type == "cuda"
    return bool(amp) and amp != "off"


class _MetricsLog:
    """Appends JSON lines to ``metrics.jsonl``; truncates it on resume."""

    def __init__(self, path: Path, resume_bytes: int | None, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled
        if not enabled:
            return
        if resume_bytes is None:
            path.write_text("")
        else:
            with open(path, "r+b") as f:
                f.truncate(resume_bytes)

    def write(self, rows: list[dict[str, Any]]) -> None:
        if not self.enabled or not rows:
            return
        with open(self.path, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
            f.flush()

    def size(self) -> int:
        return self.path.stat().st_size if self.enabled else 0


def lr_factor(optim: dict[str, Any], step: int, total: int) -> float:
    """The learning-rate multiplier for optimisation step ``step`` (0-based) of ``total``.

    ``constant`` (the papers'): 1 after an optional linear warm-up. ``cosine``: linear warm-up
    over ``warmup_steps``, then a half cosine from 1 down to ``min_lr_ratio`` at the last step (``total - 1``).
    A pure function of the step, so a resumed run follows the same schedule bit for bit (as
    long as ``steps`` is not raised on resume: the cosine is stretched over the new total).
    Applied to the encoder's and the loss parameters' (AnInfoNCE lambda) optimisers alike.
    """
    warm = int(optim.get("warmup_steps", 0))
    if step < warm:
        return (step + 1) / warm
    if optim.get("schedule", "constant") == "constant":
        return 1.0
    lo = float(optim.get("min_lr_ratio", 0.0))
    span = max(total - warm - 1, 1)  # the last step (total - 1) runs at min_lr_ratio
    t = min(max(step - warm, 0) / span, 1.0)
    return lo + (1.0 - lo) * 0.5 * (1.0 + math.cos(math.pi * t))


def train(
    config: dict[str, Any],
    out: str | Path,
    resume: bool = False,
    progress: bool | None = None,
    echo: Callable[[str], None] | None = None,
) -> Path:
    """Train (or, with ``resume``, continue) the run described by ``config`` in ``out``.

    ``config`` is a resolved config (:func:`resolve_config`). With ``resume`` the run's own
    ``config.json`` is used (only ``steps`` may be raised) and training continues from
    ``checkpoints/last.pt`` exactly as if it had never stopped. Returns the run directory.
    """
    out = Path(out)
    ckpt_dir = out / "checkpoints"
    last = ckpt_dir / "last.pt"
    ckpt: dict[str, Any] | None = None
    if resume:
        if not (out / "config.json").is_file():
            raise UsageError(f"cannot resume: {out} has no config.json")
        saved = json.loads((out / "config.json").read_text())
        if config.get("steps", saved["steps"]) > saved["steps"]:
            saved["steps"] = int(config["steps"])
        config = saved
        if last.is_file():
            ckpt = _load_ckpt(last)
    elif out.exists() and any(out.iterdir()):
        raise UsageError(f"run directory {out} is not empty; pass --resume to continue it")

    dist_info, device = _init_distributed(config["loop"].get("device", "auto"))
    threads = int(config["loop"].get("threads", 0) or 0)
    if threads > 0:
        torch.set_num_threads(threads)
    seed = int(config["seed"])
    torch.manual_seed(seed)
    encoder = build_encoder(config["model"]).to(device)
    loss_gen = torch.Generator().manual_seed(_stream_seed(seed, 2))
    loss_fn: ContrastiveLoss = build_loss(config["loss"], loss_gen).to(device)
    is_image = config["model"]["kind"] == "torchvision"
    channels_last = is_image and bool(config["loop"].get("channels_last", True))
    if channels_last:
        encoder = encoder.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(
        encoder.parameters(),
        lr=float(config["optim"]["lr"]),
        weight_decay=float(config["optim"].get("weight_decay", 0.0)),
    )
    loss_params = [p for p in loss_fn.parameters() if p.requires_grad]
    lam_opt = (
        torch.optim.Adam(loss_params, lr=float(config["optim"]["lambda_lr"]))
        if loss_params
        else None
    )
    source = _make_source(config, device, dist_info.rank, dist_info.world, ckpt)
    optim_cfg = config["optim"]
    base_lrs = [(opt, float(optim_cfg["lr"]))]
    if lam_opt is not None:
        base_lrs.append((lam_opt, float(optim_cfg["lambda_lr"])))
    scheduled = optim_cfg.get("schedule", "constant") != "constant" or bool(
        int(optim_cfg.get("warmup_steps", 0))
    )

    step = 0
    resume_bytes = None
    if ckpt is not None:
        encoder.load_state_dict(ckpt["encoder"])
        loss_fn.load_state_dict(ckpt["loss"])
        opt.load_state_dict(ckpt["optimizer"])
        if lam_opt is not None:
            lam_opt.load_state_dict(ckpt["lambda_optimizer"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        if device.type == "cuda" and ckpt["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"], device)
        source.load_state(ckpt["rng"]["source"][dist_info.rank])
        step = int(ckpt["step"])
        resume_bytes = int(ckpt["metrics_bytes"])
    elif resume and (out / "metrics.jsonl").exists():
        resume_bytes = 0

    if dist_info.main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        if not resume or json.loads((out / "config.json").read_text()) != config:
            _atomic_write_bytes(out / "config.json", (json.dumps(config, indent=2) + "\n").encode())
    log = _MetricsLog(out / "metrics.jsonl", resume_bytes, dist_info.main)

    model: nn.Module = encoder
    if dist_info.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(
            encoder, device_ids=[device.index] if device.type == "cuda" else None
        )
    fwd = torch.compile(model) if config["loop"].get("compile") else model
    amp = _use_amp(config, device)
    batch = int(config["batch_size"])
    n_neg = loss_fn.n_negatives(batch // dist_info.world if dist_info.world > 1 else batch)
    norm = loss_fn.normalised if isinstance(loss_fn, EnsembleLoss) else (lambda v: v)
    loop = config["loop"]
    total = int(config["steps"])
    log_every = max(1, int(loop["log_every"]))

    show = progress if progress is not None else sys.stderr.isatty()
    bar = None
    if show and dist_info.main:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=step, unit="step", dynamic_ncols=True)

    pending_loss: list[torch.Tensor] = []
    pending_lam: list[torch.Tensor] = []
    pending_steps: list[int] = []
    latest: dict[str, Any] = {}
    t_last, s_last = time.perf_counter(), step

    def flush() -> None:
        nonlocal t_last, s_last
        if not pending_steps:
            return
        losses = torch.stack(pending_loss).float().cpu().tolist()
        lams = torch.stack(pending_lam).float().cpu().tolist() if pending_lam else None
        rows = []
        for i, s in enumerate(pending_steps):
            lv = norm(losses[i])
            row: dict[str, Any] = {
                "kind": "train",
                "step": s,
                "loss": losses[i],
                "mi_bound": mi_lower_bound(lv, n_neg),
            }
            if lams is not None:
                row["lambda"] = lams[i]
            if scheduled:
                row["lr"] = base_lrs[0][1] * lr_factor(optim_cfg, s - 1, total)
            rows.append(row)
        now = time.perf_counter()
        rows[-1]["steps_per_s"] = (pending_steps[-1] - s_last) / max(now - t_last, 1e-9)
        t_last, s_last = now, pending_steps[-1]
        latest["loss"] = losses[-1]
        log.write(rows)
        pending_loss.clear()
        pending_lam.clear()
        pending_steps.clear()

    def evaluate() -> None:
        _, z = source.eval_set()
        encoder.eval()
        with torch.no_grad():
            h = source.encode_eval(encoder, amp).double().cpu().numpy()
        encoder.train()
        lam = loss_fn.lambdas()
        learned = None if lam is None else lam.detach().double().cpu().numpy()
        true = getattr(getattr(source, "dgp", None), "true_lambdas", None)
        row: dict[str, Any] = {"kind": "eval", "step": step, **score(h, z, learned, true)}
        log.write([row])
        latest.update(r2=row["r2"], mcc=row["mcc"])

    def checkpoint() -> None:
        sources = [source.state()]
        if dist_info.world > 1:
            import torch.distributed as dist

            gathered: list[Any] = [None] * dist_info.world
            dist.all_gather_object(gathered, source.state())
            sources = gathered
        if not dist_info.main:
            return
        state = {
            "format": CKPT_FORMAT,
            "step": step,
            "encoder": {k: v.detach().cpu() for k, v in encoder.state_dict().items()},
            "loss": {k: v.detach().cpu() for k, v in loss_fn.state_dict().items()},
            "optimizer": opt.state_dict(),
            "lambda_optimizer": lam_opt.state_dict() if lam_opt is not None else None,
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                "source": sources,
            },
            "metrics_bytes": log.size(),
            **source.extra_checkpoint(),
        }
        name = ckpt_dir / f"step-{step:08d}.pt"
        _atomic_torch_save(state, name)
        _atomic_torch_save(state, last)

    encoder.train()
    try:
        while step < total:
            if scheduled:
                f = lr_factor(optim_cfg, step, total)
                for o, lr0 in base_lrs:
                    for g in o.param_groups:
                        g["lr"] = lr0 * f
            x1, x2 = source.next_batch(step)
            if channels_last and x1.dim() == 4:
                x1 = x1.contiguous(memory_format=torch.channels_last)
                x2 = x2.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, torch.bfloat16, enabled=amp):
                h = fwd(torch.cat([x1, x2]))
            b = x1.shape[0]
            loss = loss_fn(h[:b].float(), h[b:].float())
            opt.zero_grad(set_to_none=True)
            if lam_opt is not None:
                lam_opt.zero_grad(set_to_none=True)
            loss.backward()
            if dist_info.world > 1 and loss_params:
                import torch.distributed as dist

                for p in loss_params:
                    if p.grad is not None:
                        dist.all_reduce(p.grad, op=dist.ReduceOp.AVG)
            opt.step()
            if lam_opt is not None:
                lam_opt.step()
            step += 1
            pending_loss.append(loss.detach())
            lam = loss_fn.lambdas()
            if lam is not None:
                pending_lam.append(lam.detach())
            pending_steps.append(step)
            do_eval = loop["eval_every"] and (step % int(loop["eval_every"]) == 0 or step == total)
            do_ckpt = loop["checkpoint_every"] and step % int(loop["checkpoint_every"]) == 0
            if step % log_every == 0 or do_eval or do_ckpt or step == total:
                flush()
                if bar is not None:
                    bar.update(step - bar.n)
            if do_eval and dist_info.main:
                evaluate()
            if do_ckpt or step == total:
                checkpoint()
            if bar is not None and latest:
                bar.set_postfix({k: f"{v:.4g}" for k, v in latest.items()}, refresh=False)
    finally:
        if bar is not None:
            bar.close()
        source.close()
    if echo is not None and dist_info.main:
        echo(
            f"trained {total} steps -> {out}" + "".join(f"  {k}={v:.4f}" for k, v in latest.items())
        )
    return out


# ----------------------------------------------------------------------------- loading runs


def _load_ckpt(path: Path) -> dict[str, Any]:
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        raise UsageError(
            f"{path} is not a readable ident3d checkpoint ({exc.__class__.__name__})"
        ) from None
    if not isinstance(ck, dict) or ck.get("format") != CKPT_FORMAT:
        raise UsageError(f"{path} is not an ident3d training checkpoint")
    return ck


@dataclass
class Run:
    """A trained run: ``encoder`` (eval mode), ``config``, ``step``, learned ``lambdas``
    (AnInfoNCE) and ``dgp`` (synthetic runs) on ``device``."""

    encoder: nn.Module
    config: dict[str, Any]
    step: int
    lambdas: np.ndarray | None
    dgp: SyntheticDGP | None
    device: torch.device
    path: Path

    def preprocess(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        """The training-time input preprocessing of image runs: uint8 ``(N, H, W, 3)`` or
        ``(N, 3, H, W)`` -> float ``(N, 3, H, W)`` in [0, 1] normalised by the dataset's
        mean/std, on the run's device (channels_last when the run used it)."""
        return preprocess_images(x, self.config, self.device)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """Encodings of already preprocessed inputs (synthetic observations or images)."""
        outs = [self.encoder(xb.to(self.device)) for xb in torch.split(x, batch_size)]
        return torch.cat(outs).float()


def preprocess_images(
    x: torch.Tensor | np.ndarray, config: dict[str, Any], device: torch.device | str = "cpu"
) -> torch.Tensor:
    """uint8 images -> normalised float tensor exactly as in training (see :class:`Run`)."""
    t = torch.as_tensor(x)
    if t.dim() == 3:
        t = t[None]
    if t.dim() != 4:
        raise UsageError(f"images must be (N, H, W, 3) or (N, 3, H, W), got shape {tuple(t.shape)}")
    if t.shape[-1] == 3 and t.shape[1] != 3:
        t = t.permute(0, 3, 1, 2)
    t = t.to(device)
    f = t.float() / 255.0 if t.dtype == torch.uint8 else t.float()
    d = config["data"]
    if d.get("mean") is not None and d.get("std") is not None:
        mean = torch.tensor(d["mean"], device=f.device).view(1, -1, 1, 1)
        std = torch.tensor(d["std"], device=f.device).view(1, -1, 1, 1)
        f = (f - mean) / std
    if config["model"]["kind"] == "torchvision" and config["loop"].get("channels_last", True):
        f = f.contiguous(memory_format=torch.channels_last)
    return f


def load_run(path_or_checkpoint: str | Path, device: torch.device | str = "cpu") -> Run:
    """Load a run directory (its ``checkpoints/last.pt``) or one checkpoint file of a run."""
    p = Path(path_or_checkpoint)
    if p.is_dir():
        run_dir = p
        ck_path = p / "checkpoints" / "last.pt"
        if not ck_path.is_file():
            raise UsageError(f"{p} has no checkpoints/last.pt (not a finished ident3d run?)")
    elif p.is_file():
        ck_path = p
        run_dir = p.parent.parent if p.parent.name == "checkpoints" else p.parent
    else:
        raise UsageError(f"{p} does not exist")
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise UsageError(f"{cfg_path} is missing: {p} is not inside an ident3d run directory")
    config = json.loads(cfg_path.read_text())
    if config.get("format") != RUN_FORMAT:
        raise UsageError(f"{cfg_path} is not an ident3d run config")
    ck = _load_ckpt(ck_path)
    dev = torch.device(device)
    encoder = build_encoder(config["model"])
    try:
        encoder.load_state_dict(ck["encoder"])
    except RuntimeError:
        raise UsageError(f"{ck_path} does not match the encoder described in {cfg_path}") from None
    encoder = encoder.to(dev).eval()
    lambdas = None
    if config["loss"]["name"] in ("aninfonce", "ensemble"):
        loss_fn = build_loss(config["loss"])
        try:
            loss_fn.load_state_dict(ck["loss"])
        except RuntimeError:
            raise UsageError(f"{ck_path} does not match the loss in {cfg_path}") from None
        lam = loss_fn.lambdas()
        lambdas = None if lam is None else lam.detach().double().numpy()
    dgp = None
    if config["data"]["kind"] == "synthetic":
        dgp = build_dgp(config["data"], dev, ck.get("mixing"))
    return Run(encoder, config, int(ck["step"]), lambdas, dgp, dev, run_dir)
