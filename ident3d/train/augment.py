"""Augmentation views (Causal3DIdent's other mode): the positive pair is two augmentations of
one image, drawn and applied batched on the training device. :class:`AugmentSpec` (the
settings), :class:`Augment` (parameters per sample from a seeded ``torch.Generator``, then
rotation, RandomResizedCrop with horizontal flip, ColorJitter, RandomGrayscale, normalisation),
:func:`augment_seed` (the generator's seed for a step) and the colour operations, which follow
``torchvision.transforms.v2.functional`` on float images.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ident3d.errors import UsageError

#: Stream of the augmentation generators in ``SeedSequence(seed, spawn_key=(STREAM, step,
#: rank))`` (the data generator of synthetic runs uses streams 1 + rank, the loss 2, eval 1000).
AUGMENT_STREAM = 3000
#: RandomResizedCrop's scale ranges of Causal3DIdent's ``--random-crop-type``.
CROP_SCALES = {"small": (0.08, 1.0), "large": (0.8, 1.0)}
INTERPOLATIONS = ("bilinear", "bicubic")
#: ITU-R 601-2 luma, as torchvision's ``rgb_to_grayscale``.
_LUMA = (0.2989, 0.587, 0.114)


@dataclass(frozen=True)
class AugmentSpec:
    """Settings of the augmentation views (the defaults are Causal3DIdent's
    ``main_3dident.py``): crops of ``crop_size`` pixels (None: the image's own height) covering
    a ``crop_scale`` fraction of the image at an aspect ratio in ``ratio``, flipped with
    probability 0.5 when ``flip``; ``ColorJitter(*jitter)`` with probability ``jitter_p``;
    grayscale with probability ``grayscale_p``; with ``rotations`` the two views are rotated by
    two distinct angles of {0, 90, 180, 270} degrees (counter-clockwise) before cropping."""

    crop_size: int | None = None
    crop_scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True
    jitter: tuple[float, float, float, float] = (0.8, 0.8, 0.8, 0.2)
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    rotations: bool = False
    interpolation: str = "bicubic"

    @classmethod
    def from_config(cls, d: dict[str, Any]) -> AugmentSpec:
        size = d.get("crop_size", "auto")
        return cls(
            crop_size=None if size in (None, "auto") else int(size),
            crop_scale=tuple(float(v) for v in d.get("crop_scale", (0.08, 1.0))),  # type: ignore[arg-type]
            ratio=tuple(float(v) for v in d.get("ratio", (3 / 4, 4 / 3))),  # type: ignore[arg-type]
            flip=bool(d.get("flip", True)),
            jitter=tuple(float(v) for v in d.get("jitter", (0.8, 0.8, 0.8, 0.2))),  # type: ignore[arg-type]
            jitter_p=float(d.get("jitter_p", 0.8)),
            grayscale_p=float(d.get("grayscale_p", 0.2)),
            rotations=bool(d.get("rotations", False)),
            interpolation=str(d.get("interpolation", "bicubic")),
        )

    def to_config(self) -> dict[str, Any]:
        d = asdict(self)
        d["crop_size"] = "auto" if self.crop_size is None else self.crop_size
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def check_augment_config(d: Any) -> None:
    """One-line :class:`UsageError` for a bad ``data.augment`` value (naming the key)."""

    def bad(key: str, what: str, value: Any) -> UsageError:
        return UsageError(f"config option 'data.augment.{key}' must be {what}, got {value!r}")

    def numbers(key: str, n: int) -> list[float]:
        v = d.get(key)
        if (
            not isinstance(v, list | tuple)
            or len(v) != n
            or not all(isinstance(a, int | float) and not isinstance(a, bool) for a in v)
        ):
            raise bad(key, f"a list of {n} numbers", v)
        return [float(a) for a in v]

    size = d.get("crop_size", "auto")
    if size != "auto" and (isinstance(size, bool) or not isinstance(size, int) or size < 8):
        raise bad("crop_size", "'auto' (the dataset's resolution) or an integer >= 8", size)
    lo, hi = numbers("crop_scale", 2)
    if not 0 < lo <= hi <= 1:
        raise bad("crop_scale", "[a, b] with 0 < a <= b <= 1", d.get("crop_scale"))
    r0, r1 = numbers("ratio", 2)
    if not 0 < r0 <= r1:
        raise bad("ratio", "[a, b] with 0 < a <= b", d.get("ratio"))
    b, c, s, h = numbers("jitter", 4)
    if min(b, c, s) < 0 or not 0 <= h <= 0.5:
        raise bad("jitter", "[brightness, contrast, saturation >= 0, hue in [0, 0.5]]", d["jitter"])
    for key in ("jitter_p", "grayscale_p"):
        p = d.get(key)
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0 <= p <= 1:
            raise bad(key, "a probability in [0, 1]", p)
    for key in ("flip", "rotations"):
        if not isinstance(d.get(key), bool):
            raise bad(key, "true or false", d.get(key))
    if d.get("interpolation") not in INTERPOLATIONS:
        raise bad("interpolation", " or ".join(INTERPOLATIONS), d.get("interpolation"))


def augment_seed(seed: int, step: int, rank: int = 0) -> int:
    """Seed of the augmentation generator of ``step`` on ``rank``: a function of
    ``(seed, step, rank)`` only, so a resumed run draws the same augmentations."""
    ss = np.random.SeedSequence(int(seed), spawn_key=(AUGMENT_STREAM, int(step), int(rank)))
    return int(ss.generate_state(1)[0])


# -- colour operations on float images in [0, 1], (B, 3, H, W); factors (B,)


def rgb_to_grayscale(x: torch.Tensor) -> torch.Tensor:
    """Luma ``(B, 1, H, W)`` as ``torchvision.transforms.v2.functional.rgb_to_grayscale``."""
    r, g, b = x.unbind(-3)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(-3)


def _blend(a: torch.Tensor, b: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    f = f.view(-1, 1, 1, 1).to(a.dtype)
    return (f * a + (1.0 - f) * b).clamp_(0.0, 1.0)


def adjust_brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (x * f.view(-1, 1, 1, 1).to(x.dtype)).clamp_(0.0, 1.0)


def adjust_contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    mean = rgb_to_grayscale(x).mean(dim=(-3, -2, -1), keepdim=True)
    return _blend(x, mean, f)


def adjust_saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return _blend(x, rgb_to_grayscale(x), f)


def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(-3)
    maxc, _ = x.max(-3)
    minc = x.min(-3).values
    eqc = maxc == minc
    cr = maxc - minc
    ones = torch.ones_like(maxc)
    s = cr / torch.where(eqc, ones, maxc)
    cr_div = torch.where(eqc, ones, cr)
    rc, gc, bc = (maxc - r) / cr_div, (maxc - g) / cr_div, (maxc - b) / cr_div
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = torch.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    return torch.stack((h, s, maxc), dim=-3)


def _hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    h, s, v = x.unbind(-3)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.to(torch.int32) % 6
    p = (v * (1.0 - s)).clamp(0.0, 1.0)
    q = (v * (1.0 - s * f)).clamp(0.0, 1.0)
    t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0)
    mask = i.unsqueeze(-3) == torch.arange(6, device=i.device).view(-1, 1, 1)
    a1 = torch.stack((v, q, p, p, t, v), dim=-3)
    a2 = torch.stack((t, v, v, q, p, p), dim=-3)
    a3 = torch.stack((p, p, t, v, v, q), dim=-3)
    a4 = torch.stack((a1, a2, a3), dim=-4)
    return torch.einsum("...ijk,...xijk->...xjk", mask.to(x.dtype), a4)


def adjust_hue(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    hsv = _rgb_to_hsv(x)
    h = (hsv[:, 0] + f.view(-1, 1, 1).to(x.dtype)) % 1.0
    return _hsv_to_rgb(torch.stack((h, hsv[:, 1], hsv[:, 2]), dim=1))


COLOR_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


class Augment:
    """Batched augmentations on ``device``: :meth:`pair` turns a uint8 batch ``(B, 3, H, W)``
    into two augmented, normalised float views ``(B, 3, S, S)``. Every draw comes from the
    ``torch.Generator`` passed in (on the same device)."""

    def __init__(
        self,
        spec: AugmentSpec,
        mean: Any,
        std: Any,
        device: torch.device | str,
        image_size: tuple[int, int],
    ) -> None:
        self.spec = spec
        self.device = torch.device(device)
        self.h, self.w = int(image_size[0]), int(image_size[1])
        self.size = int(spec.crop_size or self.h)
        if spec.rotations and self.h != self.w:
            raise UsageError(
                f"rotation views need square images, the dataset's are {self.w} x {self.h}"
            )
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)

    def _uniform(self, gen: torch.Generator, shape: tuple[int, ...], lo: float, hi: float):
        return lo + (hi - lo) * torch.rand(shape, generator=gen, device=self.device)

    def sample(self, n: int, gen: torch.Generator, rotation: torch.Tensor | None = None):
        """Parameters of ``n`` augmentations: crop boxes ``top, left, height, width`` (as
        ``RandomResizedCrop.get_params``: 10 tries, then the central crop), flips, whether the
        jitter applies, its four factors and the order of its four operations, grayscale, and
        the rotation (quarter turns; ``rotation`` given, or 0)."""
        s, dev = self.spec, self.device
        area = float(self.h * self.w)
        tries = 10
        target = area * self._uniform(gen, (n, tries), *s.crop_scale)
        log_r = self._uniform(gen, (n, tries), math.log(s.ratio[0]), math.log(s.ratio[1]))
        aspect = torch.exp(log_r)
        cw = torch.round(torch.sqrt(target * aspect))
        ch = torch.round(torch.sqrt(target / aspect))
        ok = (cw > 0) & (cw <= self.w) & (ch > 0) & (ch <= self.h)
        first = ok.float().argmax(1, keepdim=True)
        w = cw.gather(1, first)[:, 0]
        h = ch.gather(1, first)[:, 0]
        u = torch.rand((n, 2), generator=gen, device=dev)
        top = torch.floor(u[:, 0] * (self.h - h + 1))
        left = torch.floor(u[:, 1] * (self.w - w + 1))
        # no try fits: the central crop of the ratio range's nearest aspect
        in_ratio = self.w / self.h
        if in_ratio < s.ratio[0]:
            fw, fh = self.w, round(self.w / s.ratio[0])
        elif in_ratio > s.ratio[1]:
            fw, fh = round(self.h * s.ratio[1]), self.h
        else:
            fw, fh = self.w, self.h
        none = ~ok.any(1)
        w = torch.where(none, float(fw), w)
        h = torch.where(none, float(fh), h)
        top = torch.where(none, float((self.h - fh) // 2), top)
        left = torch.where(none, float((self.w - fw) // 2), left)
        flip = torch.rand(n, generator=gen, device=dev) < 0.5
        if not s.flip:
            flip = torch.zeros_like(flip)
        jitter = torch.rand(n, generator=gen, device=dev) < s.jitter_p
        b, c, sat, hue = s.jitter
        factors = torch.stack(
            [
                self._uniform(gen, (n,), max(0.0, 1 - b), 1 + b),
                self._uniform(gen, (n,), max(0.0, 1 - c), 1 + c),
                self._uniform(gen, (n,), max(0.0, 1 - sat), 1 + sat),
                self._uniform(gen, (n,), -hue, hue),
            ],
            1,
        )
        order = torch.rand((n, 4), generator=gen, device=dev).argsort(1)
        gray = torch.rand(n, generator=gen, device=dev) < s.grayscale_p
        rot = torch.zeros(n, dtype=torch.long, device=dev) if rotation is None else rotation
        return {
            "top": top, "left": left, "height": h, "width": w, "flip": flip, "jitter": jitter,
            "factors": factors, "order": order, "gray": gray, "rotation": rot,
        }  # fmt: skip

    def geometry(self, x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        """Rotate (quarter turns, counter-clockwise), crop the box, flip, resize to ``S x S``:
        one ``grid_sample`` with a per-sample affine map (pixel centres as
        ``F.interpolate(align_corners=False)`` places them); bicubic results are clamped to
        [0, 1]."""
        if bool((p["rotation"] != 0).any()):
            out = x.clone()
            for k in (1, 2, 3):
                m = p["rotation"] == k
                if bool(m.any()):
                    out[m] = torch.rot90(x[m], k, dims=(-2, -1))
            x = out
        n = x.shape[0]
        h, w = x.shape[-2], x.shape[-1]
        sx = p["width"] / w
        theta = torch.zeros((n, 2, 3), dtype=x.dtype, device=x.device)
        theta[:, 0, 0] = torch.where(p["flip"], -sx, sx)
        theta[:, 0, 2] = (2 * p["left"] + p["width"]) / w - 1
        theta[:, 1, 1] = p["height"] / h
        theta[:, 1, 2] = (2 * p["top"] + p["height"]) / h - 1
        grid = F.affine_grid(theta, [n, 3, self.size, self.size], align_corners=False)
        out = F.grid_sample(
            x, grid, mode=self.spec.interpolation, padding_mode="border", align_corners=False
        )
        return out.clamp_(0.0, 1.0) if self.spec.interpolation == "bicubic" else out

    def color(self, x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        """ColorJitter (each sample's four operations in its own random order, on the samples
        it applies to), then grayscale (three equal channels)."""
        x = x.clone()
        for pos in range(4):
            for op, fn in enumerate(COLOR_OPS):
                m = p["jitter"] & (p["order"][:, pos] == op)
                idx = m.nonzero()[:, 0]
                if idx.numel():
                    x[idx] = fn(x[idx], p["factors"][idx, op])
        g = p["gray"].nonzero()[:, 0]
        if g.numel():
            x[g] = rgb_to_grayscale(x[g]).expand(-1, 3, -1, -1)
        return x

    def view(self, x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        """One augmented, normalised view of uint8 (or [0, 1] float) images ``x``."""
        f = x.to(self.device, non_blocking=True)
        f = f.float().div_(255.0) if f.dtype == torch.uint8 else f.float()
        f = self.color(self.geometry(f, p), p)
        return (f - self.mean) / self.std

    def pair(self, x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Two augmentations of each image of ``x``; with rotations two distinct angles."""
        n = x.shape[0]
        r1 = r2 = None
        if self.spec.rotations:
            r1 = torch.randint(0, 4, (n,), generator=gen, device=self.device)
            r2 = (r1 + torch.randint(1, 4, (n,), generator=gen, device=self.device)) % 4
        p1 = self.sample(n, gen, r1)
        p2 = self.sample(n, gen, r2)
        return self.view(x, p1), self.view(x, p2)
