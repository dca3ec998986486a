"""Image/text contrastive training (``ident3d train --modality image-text``).

An image encoder (a torchvision backbone, resnet18 by default, as in the reference harness
multimodal-contrastive-learning ``main_imgtxt.py`` lines 212-227, or ``convnet``,
:mod:`ident3d.image_encoder`, for CPU runs) and a text encoder
(:mod:`ident3d.text_encoder`) trained jointly with the symmetric InfoNCE of the paper
(``main_imgtxt.py`` lines 55-76 with ``utils/losses.py`` ``infonce_loss``: cosine similarity
divided by the temperature, the other 2B - 2 encodings of both modalities as negatives, both
modalities as anchors; :class:`ident3d.losses.InfoNCE` with ``similarity="cosine"``,
``negatives="both"``, ``symmetric=True`` computes exactly that), Adam, gradient norm clipped
to 2 (line 73). Batches are drawn with a seeded ``torch.Generator``; images are normalised on
the device with the dataset's per-channel statistics.

The run directory holds ``config.json``, ``metrics.jsonl`` (one ``train`` row per logged step),
``vocab.json`` (the training split's vocabulary, for evaluation on other splits) and
``checkpoints/final.pt`` (both encoders' ``state_dict``s, loadable with
``torch.load(..., weights_only=True)``); :func:`load_image_text_run` reads it back.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ident3d.data.multimodal_dataset import MultimodalDataset
from ident3d.errors import UsageError
from ident3d.image_encoder import SmallConvEncoder
from ident3d.losses import InfoNCE
from ident3d.models import build_encoder
from ident3d.text.vocabulary import Vocabulary
from ident3d.text_encoder import build_text_encoder

RUN_KIND = "image-text"


@dataclass
class ImageTextConfig:
    """Everything an image/text run depends on (``config.json``)."""

    data: str
    steps: int = 1000
    batch_size: int = 256
    lr: float = 1e-4
    temperature: float = 1.0
    encoding_size: int = 4
    image_encoder: str = "resnet18"
    image_hidden: int = 100
    text_encoder: str = "conv1d"
    seed: int = 0
    device: str = "auto"
    log_every: int = 50
    clip_grad_norm: float = 2.0
    eval_data: str | None = None
    threads: int = 0

    def check(self) -> None:
        for name in ("steps", "batch_size", "encoding_size", "image_hidden", "log_every"):
            if int(getattr(self, name)) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1.")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise UsageError(f"--temperature must be positive, got {self.temperature}.")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise UsageError(f"--lr must be positive, got {self.lr}.")


def resolve_device(name: str) -> torch.device:
    if name in ("auto", None):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: no CUDA device here.")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown --device {name!r}.") from None


def build_encoders(cfg: ImageTextConfig, vocab_size: int) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(cfg.seed)
    if cfg.image_encoder == "convnet":
        image: nn.Module = SmallConvEncoder(cfg.encoding_size, cfg.image_hidden)
    else:
        image = build_encoder({"kind": "torchvision", "backbone": cfg.image_encoder,
                               "n_out": cfg.encoding_size, "head_features": cfg.image_hidden})  # fmt: skip
    text = build_text_encoder(
        {"name": cfg.text_encoder, "vocab_size": vocab_size, "n_out": cfg.encoding_size}
    )
    return image, text


def symmetric_infonce(temperature: float) -> InfoNCE:
    return InfoNCE(similarity="cosine", temperature=temperature, negatives="both", symmetric=True)


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    os.replace(tmp, path)


def train_image_text(
    cfg: ImageTextConfig, out: str | os.PathLike[str], echo: Callable[[str], None] | None = None
) -> Path:
    """Train and write the run directory ``out``; returns it."""
    cfg.check()
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"--out {out} is not empty; choose a new run directory.")
    ds = MultimodalDataset(cfg.data)
    if len(ds) < 2:
        raise UsageError(f"{cfg.data} holds {len(ds)} sample(s); contrastive training needs 2+.")
    batch = min(cfg.batch_size, len(ds))
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    f_img, f_txt = build_encoders(cfg, ds.vocab_size)
    f_img, f_txt = f_img.to(device), f_txt.to(device)
    loss_fn = symmetric_infonce(cfg.temperature)
    params = [*f_img.parameters(), *f_txt.parameters()]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    norm = ds.normalizer(device)
    gen = torch.Generator().manual_seed(cfg.seed)
    out.mkdir(parents=True, exist_ok=True)
    (out / "checkpoints").mkdir(exist_ok=True)
    _write_json(out / "config.json", {"kind": RUN_KIND, **asdict(cfg), "batch_size_used": batch,
                                      "vocab_size": ds.vocab_size,
                                      "max_sequence_length": ds.max_sequence_length})  # fmt: skip
    ds.vocabulary.save(out / "vocab.json")
    order = torch.randperm(len(ds), generator=gen)
    pos = 0
    t0 = time.perf_counter()
    f_img.train()
    f_txt.train()
    with open(out / "metrics.jsonl", "w") as log:
        for step in range(1, cfg.steps + 1):
            if pos + batch > len(ds):
                order, pos = torch.randperm(len(ds), generator=gen), 0
            idx = order[pos : pos + batch].tolist()
            pos += batch
            images, ids, _, _ = ds.__getitems__(sorted(idx)).batch
            x = norm(images.to(device))
            h_img, h_txt = f_img(x), f_txt(ids.to(device))
            loss = loss_fn(h_img, h_txt)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, max_norm=cfg.clip_grad_norm)
            opt.step()
            if step % cfg.log_every == 0 or step == cfg.steps or step == 1:
                row = {"kind": "train", "step": step, "loss": float(loss.detach()),
                       "seconds": round(time.perf_counter() - t0, 3)}  # fmt: skip
                log.write(json.dumps(row) + "\n")
                log.flush()
                if echo is not None:
                    echo(f"step {step}/{cfg.steps}  loss {row['loss']:.4f}")
    ckpt = {
        "image_encoder": f_img.state_dict(),
        "text_encoder": f_txt.state_dict(),
        "step": cfg.steps,
    }
    tmp = out / "checkpoints" / f".final.pt.tmp-{os.getpid()}"
    torch.save(ckpt, tmp)
    os.replace(tmp, out / "checkpoints" / "final.pt")
    return out


@dataclass
class ImageTextRun:
    config: ImageTextConfig
    image_encoder: nn.Module
    text_encoder: nn.Module
    vocabulary: Vocabulary
    path: Path


def is_image_text_run(path: str | os.PathLike[str]) -> bool:
    try:
        return json.loads((Path(path) / "config.json").read_text()).get("kind") == RUN_KIND
    except (OSError, ValueError, AttributeError):
        return False


def load_image_text_run(path: str | os.PathLike[str], device: str = "cpu") -> ImageTextRun:
    """Both encoders (eval mode), the config and the vocabulary of a run directory."""
    p = Path(path)
    if not is_image_text_run(p):
        raise UsageError(f"{p} is not an image/text run directory (ident3d train --modality "
                         "image-text).")  # fmt: skip
    d = json.loads((p / "config.json").read_text())
    fields = {k: d[k] for k in ImageTextConfig.__dataclass_fields__ if k in d}
    cfg = ImageTextConfig(**fields)
    vocab = Vocabulary.load(p / "vocab.json")
    f_img, f_txt = build_encoders(cfg, vocab.size)
    ckpt_path = p / "checkpoints" / "final.pt"
    if not ckpt_path.is_file():
        raise UsageError(f"{p} has no checkpoints/final.pt (training did not finish).")
    ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
    f_img.load_state_dict(ckpt["image_encoder"])
    f_txt.load_state_dict(ckpt["text_encoder"])
    return ImageTextRun(cfg, f_img.to(device).eval(), f_txt.to(device).eval(), vocab, p)
