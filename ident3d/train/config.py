"""Run configs: the defaults (:func:`default_config`), TOML loading, merging and
:func:`resolve_config`, which turns a user config into the resolved, JSON-ready config of a run.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from ident3d.errors import UsageError
from ident3d.losses import build_loss
from ident3d.models import default_model_spec
from ident3d.synthetic import SyntheticSpec, lambda_preset

RUN_FORMAT = "ident3d-run/1"
SCHEDULES = ("constant", "cosine")


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
