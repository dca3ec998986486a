"""Run configs: the defaults (:func:`default_config`), TOML loading, merging and
:func:`resolve_config`, which turns a user config into the resolved, JSON-ready config of a run.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ident3d.errors import DataError, UsageError
from ident3d.losses import build_loss
from ident3d.models import default_model_spec
from ident3d.synthetic import SyntheticSpec, lambda_preset
from ident3d.train.augment import AugmentSpec, check_augment_config

RUN_FORMAT = "ident3d-run/1"
SCHEDULES = ("constant", "cosine")
#: How a dataset run makes its positive pairs: ``pairs`` (the rendered pair or kNN pairs, as
#: ``pairs`` says) or ``augment`` (two augmentations of one image, :mod:`ident3d.train.augment`).
VIEWS = ("pairs", "augment")


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
            "views": "pairs",
            "augment": AugmentSpec().to_config(),
        }
        cfg["model"] = default_model_spec("torchvision", 10)
    return cfg


class ConfigKeyError(UsageError):
    """An unknown key or a value of the wrong type in a config; :func:`resolve_config` adds
    the file it came from to the message."""


#: Keys of the ``model`` section: those of the MLP and of the torchvision encoder specs.
MODEL_KEYS = frozenset(default_model_spec("mlp", 10)) | frozenset(
    default_model_spec("torchvision", 10)
)
#: Keys a resolved config derives (``config.json`` holds them; a config file may repeat them).
DERIVED_KEYS = frozenset({"data.n_latents", "data.size"})
#: Keys of one ``[[loss.members]]`` entry of an ensemble.
MEMBER_KEYS = frozenset({"weight", "loss"})


def _check_type(name: str, default: Any, value: Any) -> None:
    """A value must have its default's kind: a number for a number (an integer for an
    integer), a boolean for a boolean. Defaults that are strings, lists or ``None`` accept
    several kinds (e.g. ``amp = "auto"`` or ``true``) and are checked where they are used."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigKeyError(f"config option {name!r} must be true or false, got {value!r}")
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigKeyError(f"config option {name!r} must be an integer, got {value!r}")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigKeyError(f"config option {name!r} must be a number, got {value!r}")


def deep_merge(
    base: dict[str, Any], over: dict[str, Any], where: str = "", strict: bool = True
) -> dict[str, Any]:
    """``base`` updated by ``over`` recursively; with ``strict`` an unknown key, or a value
    whose kind differs from its default's (:func:`_check_type`), is an error. The ``model``
    section is checked against :data:`MODEL_KEYS` (either encoder kind's keys)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        name = f"{where}{k}"
        known = k in out or (where == "model." and k in MODEL_KEYS) or name in DERIVED_KEYS
        if strict and not known:
            raise ConfigKeyError(f"unknown config option {name!r}")
        if strict and k in out:
            _check_type(name, out[k], v)
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v, f"{name}.", strict)
        elif strict and isinstance(out.get(k), dict):
            raise ConfigKeyError(f"config option {name!r} must be a table (section)")
        else:
            out[k] = copy.deepcopy(v)
    return out


def _check_members(members: Any) -> None:
    """Every ``[[loss.members]]`` entry: a table with ``weight`` and ``loss`` (a table whose
    keys are those of its loss) and nothing else."""
    if not isinstance(members, list):
        raise ConfigKeyError("config option 'loss.members' must be a list of tables")
    for i, m in enumerate(members):
        where = f"loss.members[{i}]"
        if not isinstance(m, dict) or not isinstance(m.get("loss"), dict):
            raise ConfigKeyError(f"{where} must be a table with a 'loss' table")
        unknown = sorted(set(m) - MEMBER_KEYS)
        if unknown:
            raise ConfigKeyError(f"unknown config option '{where}.{unknown[0]}'")
        if "weight" in m:
            _check_type(f"{where}.weight", 1.0, m["weight"])
        name = m["loss"].get("name", "infonce")
        if name in ("infonce", "aninfonce"):
            allowed = {**default_config("synthetic", name)["loss"], "lambda_lr": 1e-3}
            deep_merge(allowed, m["loss"], f"{where}.loss.")


def check_config_keys(cfg: dict[str, Any], source: str | Path) -> None:
    """Reject an unknown key (or a value of the wrong kind) of a run's ``config.json``, as
    for a ``--config`` file: one line naming the key and ``source``."""
    try:
        data, loss = cfg.get("data") or {}, cfg.get("loss") or {}
        if not isinstance(data, dict) or not isinstance(loss, dict):
            raise ConfigKeyError("config options 'data' and 'loss' must be tables (sections)")
        base = default_config(data.get("kind", "synthetic"), loss.get("name", "infonce"))
        merged = deep_merge(base, cfg)
        if merged["loss"]["name"] == "ensemble":
            _check_members(merged["loss"].get("members"))
    except ConfigKeyError as exc:
        raise DataError(f"{exc} in {source}") from None


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a config file: TOML, or JSON when it ends in ``.json`` (a run's ``config.json``);
    same structure as ``config.json``."""
    import tomllib

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"config file {p} does not exist")
    if p.suffix.lower() == ".json":
        import json

        try:
            cfg = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UsageError(f"config file {p} is not valid JSON: {exc}") from None
        if not isinstance(cfg, dict):
            raise UsageError(f"config file {p} does not hold a JSON object")
        return cfg
    try:
        return tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config file {p} is not valid TOML: {exc}") from None


def resolve_config(user: dict[str, Any], source: str | Path | None = None) -> dict[str, Any]:
    """Merge user settings (from a TOML file and flags) over the defaults they select, fill in
    derived values and validate. The result is what ``config.json`` holds.

    ``source`` names the file the settings came from: an unknown key or a value of the wrong
    kind is reported with it (the flags themselves are typed by the command line)."""
    try:
        return _resolve(user)
    except ConfigKeyError as exc:
        if source is None:
            raise
        raise ConfigKeyError(f"{exc} in {source}") from None


def _resolve(user: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(user.get("data", {}), dict) or not isinstance(user.get("loss", {}), dict):
        raise ConfigKeyError("config options 'data' and 'loss' must be tables (sections)")
    data = dict(user.get("data") or {})
    kind = data.get("kind") or ("dataset" if data.get("path") else "synthetic")
    data["kind"] = kind
    if kind == "synthetic" and ("views" in data or "augment" in data):
        raise UsageError(
            "--views and data.augment apply to image datasets (--data DIR), not synthetic data"
        )
    loss_name = (user.get("loss") or {}).get("name", "infonce")
    if kind == "synthetic" and isinstance(data.get("lambdas"), str) and "conditional" not in data:
        data["conditional"] = "anisotropic"
    base = default_config(kind, loss_name)
    cfg = deep_merge(base, {**user, "data": data})
    if cfg["loss"]["name"] == "ensemble":
        _check_members(cfg["loss"].get("members"))
    cfg["format"] = RUN_FORMAT
    for key in ("seed", "steps", "batch_size"):
        cfg[key] = int(cfg[key])
    if cfg["steps"] < 1:
        raise UsageError(f"--steps must be at least 1, got {cfg['steps']}")
    if cfg["batch_size"] < 2:
        raise UsageError(f"--batch-size must be at least 2, got {cfg['batch_size']}")
    optim = cfg["optim"]
    for key, flag in (("lr", "--lr"), ("lambda_lr", "--lambda-lr")):
        if not float(optim[key]) > 0:
            raise UsageError(f"{flag} must be positive, got {optim[key]}")
    if float(optim.get("weight_decay", 0.0)) < 0:
        raise UsageError(f"weight_decay must be >= 0, got {optim['weight_decay']}")
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
    for key, least in (("eval_samples", 4), ("num_workers", 0), ("threads", 0)):
        if int(loop[key]) < least:
            raise UsageError(f"{key} must be >= {least}, got {loop[key]}")
    if cfg["data"]["kind"] == "synthetic":
        d = cfg["data"]
        if isinstance(d.get("dims"), str):  # "0-2,5" as ident3d.latents.parse_dims reads it
            from ident3d.latents import parse_dims

            dims = parse_dims(d["dims"], int(d["n"]))
            d["dims"] = None if dims is None else list(dims)
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
    m = cfg["model"]
    if m.get("kind") == "mlp":
        hidden = m.get("hidden")
        if not isinstance(hidden, list) or not all(
            isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in hidden
        ):
            raise UsageError(f"--hidden widths must be positive integers, got {hidden!r}")
    if int(m.get("n_out", 1)) < 1:
        raise UsageError(f"model n_out must be at least 1, got {m['n_out']}")
    if cfg["loss"]["name"] == "aninfonce" and "n" not in (user.get("loss") or {}):
        cfg["loss"]["n"] = int(cfg["model"]["n_out"])
    build_loss(cfg["loss"])  # validates the loss options
    return cfg


def resolve_data_path(
    path: str | None, run_dir: Path | None = None, what: str = "dataset"
) -> str | None:
    """A dataset path as a run records it: absolute. A relative one (from a run written
    before paths were recorded absolute) is looked up next to the run directory (relative to
    its parent, where it was typed), then in the current directory."""
    if path is None:
        return None
    p = Path(path).expanduser()
    if p.is_absolute():
        return str(p)
    candidates = ([run_dir.resolve().parent / p] if run_dir is not None else []) + [p.resolve()]
    for c in candidates:
        if c.exists():
            return str(c.resolve())
    where = " or ".join(str(c) for c in candidates)
    raise UsageError(f"{what} {path} does not exist (looked for {where})")


#: What the loaders raise for a dataset whose files do not match its manifest (an edited
#: height or kind: h5py's "out buffer is only N bytes", a k-d tree of the wrong shape, ...).
READ_ERRORS = (ValueError, OSError, KeyError, IndexError)


def data_read_error(path: str | Path, exc: BaseException) -> DataError:
    """The one-line :class:`DataError` for a dataset that cannot be read as its manifest says."""
    msg = str(exc).strip().splitlines()
    detail = msg[-1] if msg else exc.__class__.__name__
    return DataError(
        f"dataset {path} cannot be read ({detail}): its manifest does not match its files; "
        f"check it with `ident3d verify {path}`"
    )


def open_checked(path: str | Path, factory: Callable[[], Any]) -> Any:
    """``factory()`` (a dataset of ``path``), with its first and last items read once, so that
    a dataset that does not match its manifest is one :class:`DataError` naming it, before
    a run writes anything."""
    try:
        ds = factory()
        n = len(ds)
        if n:
            knn = ds.__class__.__name__ == "KNNPairDataset"
            ds.__getitems__([(0, 0), (0, n - 1)] if knn else [0, n - 1])
    except READ_ERRORS as exc:
        raise data_read_error(path, exc) from None
    return ds


def _open_training_dataset(d: dict[str, Any], seed: int) -> Any:
    """The torch dataset of a ``dataset`` data section: exact pairs or kNN pairs (checked
    by :func:`open_checked`)."""
    from ident3d import data as data_mod

    path = d.get("path")
    if not path or not Path(path).exists():
        raise UsageError(f"dataset {path} does not exist")
    if d["pairs"] == "exact":
        return open_checked(path, lambda: data_mod.PairDataset(path))
    if d["pairs"] == "none":  # augmentation views of single images
        return open_checked(path, lambda: data_mod.ImageDataset(path))
    return open_checked(
        path,
        lambda: data_mod.KNNPairDataset(
            path, conditional=d["knn_conditional"], sigma=float(d["knn_sigma"]), seed=seed
        ),
    )


def _resolve_dataset(cfg: dict[str, Any], user: dict[str, Any]) -> None:
    """Fill in a dataset run's pair mode, normalisation and latent dimension from the data."""
    from ident3d import data as data_mod

    d = cfg["data"]
    path = d.get("path")
    if not path or not Path(path).exists():
        raise UsageError(f"dataset {path} does not exist")
    path = d["path"] = str(Path(path).expanduser().resolve())
    if d.get("eval_path") is not None and Path(d["eval_path"]).exists():
        d["eval_path"] = str(Path(d["eval_path"]).expanduser().resolve())
    try:
        data_mod.detect_layout(path)
    except FileNotFoundError:
        raise UsageError(f"{path} is not a dataset (no manifest.json or original layout)") from None
    try:
        ds = open_checked(path, lambda: data_mod.ImageDataset(path))
        kind = "images"
    except DataError:
        raise
    except UsageError:
        ds = open_checked(path, lambda: data_mod.PairDataset(path))
        kind = "pairs"
    pairs = d.get("pairs", "auto")
    views = d.get("views", "pairs")
    if views not in VIEWS:
        raise UsageError(f"unknown views {views!r}; choose pairs or augment")
    given = (user.get("data") or {}).get("augment") or {}
    defaults = AugmentSpec().to_config()
    changed = sorted(k for k, v in given.items() if v != defaults.get(k))
    if views != "augment" and changed:  # a run's own config.json repeats the defaults: fine
        key = changed[0]
        raise UsageError(
            f"data.augment.{key} (--crop-size, --crop-scale, --rotations) applies to "
            "--views augment only"
        )
    if views == "augment":
        if pairs not in ("auto", "none", "exact" if kind == "pairs" else "none"):
            raise UsageError(
                f"--views augment makes each positive pair from one image; --pairs {pairs} "
                "does not apply (leave it at auto)"
            )
        check_augment_config(d["augment"])
        # a pairs dataset is read as pairs and its first view augmented
        pairs = "exact" if kind == "pairs" else "none"
        if d["augment"].get("rotations") and ds.source.height != ds.source.width:
            raise UsageError(
                f"--rotations needs square images; {path} holds "
                f"{ds.source.width} x {ds.source.height}"
            )
    elif pairs == "auto":
        pairs = "exact" if kind == "pairs" else "knn"
    if pairs == "exact" and kind != "pairs" and views == "pairs":
        raise UsageError(
            f"{path} holds single images, not rendered pairs: a pair loss needs --pairs knn "
            "(nearest-neighbour pairs) or a pairs dataset"
        )
    if pairs == "knn" and kind != "images" and views == "pairs":
        raise UsageError(f"{path} holds rendered pairs: use --pairs exact (or auto)")
    if pairs not in ("exact", "knn") and not (views == "augment" and pairs == "none"):
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
