"""The training harness: contrastive encoders on synthetic data or on a stored dataset.

A run is driven by one *resolved config* (a JSON-ready dict, written to ``config.json``):

```
{"format": "ident3d-run/1", "seed": 0, "steps": 30000, "batch_size": 1000,
 "data":  {"kind": "synthetic", n, space, marginal, conditional, sigma, kappa, lambdas, ...}
          | {"kind": "dataset", "path": DIR, "pairs": "exact"|"knn", "knn_conditional",
            "knn_sigma", "mean", "std", "eval_path", "resident", "n_latents", "size",
            "views": "pairs"|"augment", "augment": {crop_size, crop_scale, ...}},
 "model": {"kind": "mlp"|"torchvision", ...},          # see ident3d.models
 "loss":  {"name": "infonce"|"aninfonce"|"ensemble", ...},  # see ident3d.losses
 "optim": {"lr": 1e-4, "lambda_lr": 1e-3, "weight_decay": 0.0, "schedule": "constant",
           "warmup_steps": 0, "min_lr_ratio": 0.0},
 "loop":  {"checkpoint_every", "eval_every", "eval_samples", "log_every", "device", "amp",
           "compile", "channels_last", "num_workers"}}
```

The run directory holds ``config.json``, ``metrics.jsonl`` (one JSON object per line:
``{"kind": "train", "step", "loss", "mi_bound", "negatives", "lambda"?}`` for every step, and
``{"kind": "eval", "step", "r2", "mcc", "r2_per_dim", ...}`` at every evaluation) and
``checkpoints/step-<8 digits>.pt`` plus ``checkpoints/last.pt``. Checkpoints are plain dicts
of tensors, numbers, strings and lists (``torch.load(..., weights_only=True)`` reads them) and
hold everything needed to continue bit for bit: the encoder, the loss parameters (AnInfoNCE's
``theta``), both optimisers, the global torch RNG, the data generator's state and the length of
``metrics.jsonl`` at that step.

:func:`load_run` turns a run directory or a checkpoint back into an encoder (eval mode), its
config, the learned lambdas and, for synthetic runs, the data-generating process.

The package holds one concept per module: :mod:`~ident3d.train.config`,
:mod:`~ident3d.train.sources`, :mod:`~ident3d.train.device`,
:mod:`~ident3d.train.distributed` (the global batch's loss across ranks), :mod:`~ident3d.train.setup`
(everything the step loop needs), :mod:`~ident3d.train.schedule` (learning rate),
:mod:`~ident3d.train.metrics_log` (logging), :mod:`~ident3d.train.scores`,
:mod:`~ident3d.train.rundir` (run directory and checkpoints), :mod:`~ident3d.train.memory`
(size checks before anything is written), :mod:`~ident3d.train.loop`
(:func:`train`) and :mod:`~ident3d.train.runs` (:func:`load_run`). The public names are re-exported here.
"""

from ident3d.train.augment import Augment, AugmentSpec, augment_seed
from ident3d.train.config import (
    RUN_FORMAT,
    SCHEDULES,
    deep_merge,
    default_config,
    load_toml,
    resolve_config,
)
from ident3d.train.device import pick_device
from ident3d.train.distributed import all_gather_with_grad, global_batch_loss, rank_rows
from ident3d.train.loop import TrainingInterrupted, train
from ident3d.train.memory import check_sizes
from ident3d.train.multimodal import ImageTextConfig, load_image_text_run, train_image_text
from ident3d.train.rundir import CKPT_FORMAT
from ident3d.train.runs import Run, load_run, preprocess_images
from ident3d.train.schedule import lr_factor
from ident3d.train.scores import score
from ident3d.train.sources import DatasetSource, SyntheticSource

__all__ = [
    "CKPT_FORMAT",
    "RUN_FORMAT",
    "SCHEDULES",
    "Augment",
    "AugmentSpec",
    "DatasetSource",
    "ImageTextConfig",
    "Run",
    "SyntheticSource",
    "TrainingInterrupted",
    "all_gather_with_grad",
    "augment_seed",
    "check_sizes",
    "deep_merge",
    "default_config",
    "global_batch_loss",
    "load_image_text_run",
    "load_run",
    "load_toml",
    "lr_factor",
    "pick_device",
    "preprocess_images",
    "rank_rows",
    "resolve_config",
    "score",
    "train",
    "train_image_text",
]
