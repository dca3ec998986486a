"""Evaluation of an image/text run: each encoder scored against every factor.

For both encoders (image and text) and every factor of the dataset, the encodings of a held-out
image/text dataset are standardised and a predictor is fitted on the first half and scored on
the second (the reference harness fits on the validation split and scores on the test split,
multimodal-contrastive-learning ``main_imgtxt.py`` lines 287-341):

* continuous factors: R^2 of linear regression and of RBF kernel ridge regression
  (:func:`ident3d.metrics.linear_r2`, :func:`ident3d.metrics.kernel_r2`);
* discrete factors: accuracy of multinomial logistic regression (L-BFGS, torch), next to the
  majority-class accuracy ("chance").

Each factor belongs to a group: ``shared`` (shape, x, y: in both modalities), ``partly shared``
(object hue and colour name: the name is a many-to-one function of the hue and the palette),
``image-specific`` (rotations, spotlight position and hue, background hue) or
``text-specific`` (phrasing, palette). The theory (Daunhawer et al. 2023, Theorem 1) predicts
that both encoders recover the shared factors and neither recovers the modality-specific ones.
``skill`` puts both kinds of score on one scale: kernel R^2 (continuous) and
``(accuracy - chance) / (1 - chance)`` (discrete), 0 = no information, 1 = perfect.
``report.json`` (format ``ident3d-eval-image-text/1``) and ``report.md`` hold the tables.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ident3d.data.multimodal_dataset import MultimodalDataset
from ident3d.errors import UsageError
from ident3d.latents.multimodal import IMAGE_COLUMNS, TEXT_INT_COLUMNS
from ident3d.metrics import kernel_r2, linear_r2
from ident3d.train.multimodal import load_image_text_run, resolve_device

REPORT_FORMAT = "ident3d-eval-image-text/1"
GROUPS = ("shared", "partly shared", "image-specific", "text-specific")

#: (factor, latent table, kind, group), in report order.
FACTORS: tuple[tuple[str, str, str, str], ...] = (
    ("object_shape", "image", "discrete", "shared"),
    ("object_xpos", "image", "discrete", "shared"),
    ("object_ypos", "image", "discrete", "shared"),
    ("object_color", "image", "continuous", "partly shared"),
    ("object_color_index", "text", "discrete", "partly shared"),
    ("object_alpharot", "image", "continuous", "image-specific"),
    ("object_betarot", "image", "continuous", "image-specific"),
    ("object_gammarot", "image", "continuous", "image-specific"),
    ("spotlight_pos", "image", "continuous", "image-specific"),
    ("spotlight_color", "image", "continuous", "image-specific"),
    ("background_color", "image", "continuous", "image-specific"),
    ("text_phrasing", "text", "discrete", "text-specific"),
    ("palette", "text", "discrete", "text-specific"),
)


@torch.no_grad()
def encode_image_text(
    run: Any, ds: MultimodalDataset, device: torch.device, batch: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Image and text encodings of every sample of ``ds`` (float64)."""
    norm = ds.normalizer(device)
    hi, ht = [], []
    for a in range(0, len(ds), batch):
        images, ids, _, _ = ds.__getitems__(list(range(a, min(len(ds), a + batch)))).batch
        hi.append(run.image_encoder(norm(images.to(device))).double().cpu().numpy())
        ht.append(run.text_encoder(ids.to(device)).double().cpu().numpy())
    return np.concatenate(hi), np.concatenate(ht)


def logistic_accuracy(
    h: np.ndarray, y: np.ndarray, n_fit: int, l2: float = 1e-3, iters: int = 200
) -> tuple[float, float]:
    """(accuracy, majority-class accuracy) on samples ``n_fit:`` of a multinomial logistic
    regression fitted on samples ``:n_fit`` (features standardised with the fit part)."""
    classes, yi = np.unique(y, return_inverse=True)
    x = torch.as_tensor(h, dtype=torch.float64)
    mu, sd = x[:n_fit].mean(0), x[:n_fit].std(0).clamp_min(1e-12)
    x = (x - mu) / sd
    t = torch.as_tensor(yi, dtype=torch.long)
    w = torch.zeros(x.shape[1], len(classes), dtype=torch.float64, requires_grad=True)
    b = torch.zeros(len(classes), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=iters, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x[:n_fit] @ w + b, t[:n_fit]) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        pred = (x[n_fit:] @ w + b).argmax(1)
    acc = float((pred == t[n_fit:]).double().mean())
    majority = int(np.bincount(yi[:n_fit], minlength=len(classes)).argmax())
    chance = float((t[n_fit:] == majority).double().mean())
    return acc, chance


def _score(h: np.ndarray, z: np.ndarray, kind: str, n_fit: int, kernel: bool) -> dict[str, Any]:
    if kind == "discrete":
        acc, chance = logistic_accuracy(h, z, n_fit)
        skill = (acc - chance) / (1.0 - chance) if chance < 1.0 else 0.0
        return {"accuracy": acc, "chance": chance, "skill": skill}
    lin = linear_r2(h, z[:, None], fit_fraction=n_fit / len(z)).per_factor[0]
    out: dict[str, Any] = {"r2_linear": float(lin)}
    if kernel:
        out["r2_kernel"] = float(kernel_r2(h, z[:, None], n_fit=n_fit).per_factor[0])
    out["skill"] = out.get("r2_kernel", out["r2_linear"])
    return out


def evaluate_image_text(
    run_path: str | os.PathLike[str],
    data: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    device: str = "auto",
    kernel: bool = True,
) -> dict[str, Any]:
    """Score a run's two encoders on the image/text dataset ``data``; write ``report.json`` and
    ``report.md`` into ``out`` (default ``RUN/eval``) and return the report."""
    dev = resolve_device(device)
    run = load_image_text_run(run_path, device=str(dev))
    ds = MultimodalDataset(data, vocabulary=run.vocabulary, save_vocabulary=False)
    n = len(ds)
    if n < 20:
        raise UsageError(f"{data} holds {n} samples; the evaluation needs at least 20.")
    n_fit = n // 2
    h_img, h_txt = encode_image_text(run, ds, dev)
    z_img = ds.latents.astype(np.float64)
    z_txt = ds.text_latents
    rows = []
    for name, table, kind, group in FACTORS:
        z = z_img[:, IMAGE_COLUMNS.index(name)] if table == "image" else (
            z_txt[:, TEXT_INT_COLUMNS.index(name)].astype(np.float64))  # fmt: skip
        row: dict[str, Any] = {"factor": name, "kind": kind, "group": group}
        for enc, h in (("image", h_img), ("text", h_txt)):
            row[enc] = _score(h, z, kind, n_fit, kernel)
        rows.append(row)
    summary = {}
    for group in GROUPS:
        sel = [r for r in rows if r["group"] == group]
        summary[group] = {
            e: float(np.mean([r[e]["skill"] for r in sel])) for e in ("image", "text")
        }
    report = {
        "format": REPORT_FORMAT,
        "run": str(Path(run_path).resolve()),
        "data": str(Path(data).resolve()),
        "n": n,
        "n_fit": n_fit,
        "encoding_size": run.config.encoding_size,
        "factors": rows,
        "summary": summary,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    dst = Path(out) if out is not None else Path(run_path) / "eval"
    dst.mkdir(parents=True, exist_ok=True)
    _atomic(dst / "report.json", json.dumps(report, indent=1) + "\n")
    _atomic(dst / "report.md", report_markdown(report))
    return report


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _fmt(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def report_markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Image/text evaluation",
        "",
        f"Run `{report['run']}`, data `{report['data']}`: {report['n']} samples, the first "
        f"{report['n_fit']} fit, the rest score; encoding size {report['encoding_size']}.",
        "",
        "Skill: kernel R^2 (continuous) or (accuracy - chance) / (1 - chance) (discrete).",
        "",
        "| group | image encoder skill | text encoder skill |",
        "|---|---|---|",
    ]
    for g, s in report["summary"].items():
        lines.append(f"| {g} | {_fmt(s['image'])} | {_fmt(s['text'])} |")
    lines += [
        "",
        "| factor | group | kind | image: R2 lin / R2 kernel / acc (chance) | "
        "text: R2 lin / R2 kernel / acc (chance) |",
        "|---|---|---|---|---|",
    ]
    for r in report["factors"]:
        cells = []
        for e in ("image", "text"):
            s = r[e]
            if r["kind"] == "discrete":
                cells.append(f"acc {_fmt(s['accuracy'])} ({_fmt(s['chance'])})")
            else:
                cells.append(f"{_fmt(s['r2_linear'])} / {_fmt(s.get('r2_kernel'))}")
        lines.append(f"| {r['factor']} | {r['group']} | {r['kind']} | {cells[0]} | {cells[1]} |")
    lines += [
        "",
        "The theory predicts high skill for the shared factors from both encoders and none for "
        "the modality-specific ones (Daunhawer et al., ICLR 2023).",
        "",
    ]
    return "\n".join(lines)
