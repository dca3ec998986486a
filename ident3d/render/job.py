"""The render job (everything that fixes a dataset's content) and the checks of its inputs."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ident3d import store
from ident3d.errors import DataError, UsageError
from ident3d.latents import (
    BLOCK_SIZE,
    LatentMapping,
    LatentModel,
    StructuredModel,
    annotate_factor_table,
    dims_structure,
    factor_table,
)
from ident3d.render.seeds import frame_seed, sample_classes
from ident3d.scenes import BUILTIN_SHAPES, MESH_SUFFIXES, Preset, view_preset

INSTALL_HINT = "pip install 'ident3d[render]'"
MIN_RESOLUTION = 16
MAX_RESOLUTION = 16384
RENDERERS = ("blender", "mock")


@dataclass
class RenderJob:
    """Everything that determines a dataset's content (recorded in its manifest)."""

    preset: Preset
    mode: str
    quality: str
    resolution: int
    objects: list[str]
    pairs: bool
    n: int
    seed: int
    model: LatentModel | StructuredModel | None = None
    latents: np.ndarray | None = None  # --latents FILE: (n, raw_dim) or (n, 2, raw_dim)
    latents_source: dict[str, Any] | None = None
    renderer: str = "blender"
    gpu: bool = False
    shard_size: int = store.DEFAULT_SHARD_SIZE
    gpu_layout: Any = None  # ident3d.render.gpus.GpuLayout (not part of the content)
    mapping: LatentMapping = field(init=False)

    def __post_init__(self) -> None:
        self.mapping = self.preset.mapping(self.mode)
        self.quality_settings = self.preset.quality(self.quality)
        self.seed_per_sample = bool(self.preset.data["render"].get("seed_per_sample", True))
        self._blocks: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
        self.view_presets = [view_preset(self.preset, v) for v in range(self.views)]

    @property
    def kind(self) -> str:
        return "pairs" if self.pairs else "images"

    @property
    def views(self) -> int:
        return 2 if self.pairs else 1

    @property
    def class_names(self) -> list[str] | None:
        if len(self.objects) <= 1:
            return None
        return [o if o in BUILTIN_SHAPES else Path(o).stem for o in self.objects]

    @property
    def class_is_latent(self) -> bool:
        """Whether the object class is drawn by the SCM (else uniformly, its own stream)."""
        return isinstance(self.model, StructuredModel) and self.model.has_class

    def _block(self, b: int) -> tuple[np.ndarray, np.ndarray | None]:
        if b not in self._blocks:
            if len(self._blocks) >= 2:  # keep the two most recent blocks
                self._blocks.pop(next(iter(self._blocks)))
            lo, hi = b * BLOCK_SIZE, (b + 1) * BLOCK_SIZE
            if isinstance(self.model, StructuredModel):
                self._blocks[b] = self.model.sample_range_with_classes(
                    lo, hi, self.seed, self.pairs
                )
            else:
                assert self.model is not None
                self._blocks[b] = (self.model.sample_range(lo, hi, self.seed, self.pairs), None)
        return self._blocks[b]

    def _range(self, start: int, stop: int, which: int) -> list[np.ndarray]:
        parts = []
        for b in range(start // BLOCK_SIZE, -(-stop // BLOCK_SIZE)):
            arr = self._block(b)[which]
            assert arr is not None
            lo, hi = max(start, b * BLOCK_SIZE), min(stop, (b + 1) * BLOCK_SIZE)
            parts.append(arr[lo - b * BLOCK_SIZE : hi - b * BLOCK_SIZE])
        return parts

    def raw_range(self, start: int, stop: int) -> np.ndarray:
        """Raw latents of samples ``start:stop``: ``(k, raw_dim)`` or ``(k, 2, raw_dim)``."""
        if self.latents is not None:
            return np.asarray(self.latents[start:stop], np.float64)
        assert self.model is not None
        parts = self._range(start, stop, 0)
        return (
            np.concatenate(parts) if parts else self.model.sample_range(0, 0, self.seed, self.pairs)
        )

    def classes(self, start: int, stop: int) -> np.ndarray:
        """Object classes of samples ``start:stop`` (the SCM's class factor when it has one,
        else uniform over the objects from the class stream)."""
        if self.class_is_latent:
            parts = self._range(start, stop, 1)
            return np.concatenate(parts) if parts else np.zeros(0, np.int64)
        return sample_classes(len(self.objects), start, stop, self.seed)

    def factor_table(self) -> list[dict[str, Any]]:
        """The manifest's factor table: types from the SCM, and the class entry when the
        dataset has classes."""
        scm = self.model.scm if isinstance(self.model, StructuredModel) else None
        return annotate_factor_table(factor_table(), scm, self.class_names)

    def pair_structure(self) -> list[dict[str, Any]] | None:
        """The manifest's blocks: the structured model's, or for ``--dims D`` pairs "style =
        D, content = the rest"; None for images and pairs that perturb every factor."""
        if not self.pairs:
            return None
        if isinstance(self.model, StructuredModel) and self.model.structure is not None:
            return self.model.structure.to_manifest()
        dims = getattr(getattr(self.model, "conditional", None), "dims", None)
        if isinstance(self.model, LatentModel) and dims is not None and self.model.dim == 10:
            s = dims_structure(tuple(dims))
            return None if s is None else s.to_manifest()
        return None

    def scm_config(self) -> dict[str, Any] | None:
        if isinstance(self.model, StructuredModel) and self.model.scm is not None:
            return self.model.scm.to_config()
        return None

    def seeds(self, start: int, stop: int) -> np.ndarray:
        """Cycles seeds ``(k, views)`` of samples ``start:stop``."""
        out = np.empty((stop - start, self.views), np.int64)
        for j, i in enumerate(range(start, stop)):
            for v in range(self.views):
                out[j, v] = frame_seed(self.seed, i, v) if self.seed_per_sample else self.seed
        return out

    def config(self) -> dict[str, Any]:
        """JSON-ready record of everything that fixes the pixels (not workers, not shards)."""
        cfg: dict[str, Any] = {
            "command": "render",
            "preset": self.preset.to_config(),
            "mode": self.mode,
            "mapping": self.mapping.to_config(),
            "quality": {"name": self.quality, **self.quality_settings},
            "resolution": self.resolution,
            "objects": list(self.objects),
            "pairs": self.pairs,
            "n": self.n,
            "seed": self.seed,
            "seed_per_sample": self.seed_per_sample,
            "renderer": self.renderer,
        }
        if self.latents_source is not None:
            cfg["latents_file"] = self.latents_source
        else:
            assert self.model is not None
            cfg["latent_model"] = self.model.to_config()
        return cfg


def load_latents_file(path: str | os.PathLike[str], raw_dim: int) -> tuple[np.ndarray, bool]:
    """Read ``--latents FILE`` (.npy): ``(N, raw_dim)`` singles or ``(N, 2, raw_dim)`` pairs."""
    p = Path(path)
    if p.suffix != ".npy":
        raise UsageError(f"--latents must be an .npy file, got {p}.")
    if not p.is_file():
        raise UsageError(f"--latents file not found: {p}.")
    try:
        z = np.load(p, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {p}: {exc}.") from None
    if z.ndim == 2 and z.shape[1] == raw_dim:
        pairs = False
    elif z.ndim == 3 and z.shape[1:] == (2, raw_dim):
        pairs = True
    else:
        hint = {10: " (10 columns are box-mode latents: --mode box)",
                 11: " (11 columns are periodic-mode latents: --mode periodic)"}  # fmt: skip
        last = z.shape[-1] if z.ndim in (2, 3) else None
        raise DataError(
            f"{p} holds an array of shape {z.shape}; expected (N, {raw_dim}) raw latents "
            f"or (N, 2, {raw_dim}) pairs for this latent mode"
            + (hint.get(last, "") if last != raw_dim else "")
            + "."
        )
    if len(z) == 0:
        raise DataError(f"{p} holds no latents.")
    if not np.issubdtype(z.dtype, np.number) or not np.isfinite(z).all():
        raise DataError(f"{p} holds non-numeric, NaN or infinite values.")
    return z.astype(np.float64), pairs


def check_objects(objects: Sequence[str]) -> list[str]:
    """Validate ``--object`` values: built-in shape names or readable mesh files."""
    out = []
    for o in objects:
        if o in BUILTIN_SHAPES:
            out.append(o)
            continue
        p = Path(o)
        if p.suffix.lower() not in MESH_SUFFIXES:
            raise UsageError(
                f"--object {o}: not a built-in shape ({', '.join(BUILTIN_SHAPES)}) nor a mesh "
                f"file ({', '.join(MESH_SUFFIXES)})."
            )
        if not p.is_file():
            raise UsageError(f"--object {o}: mesh file not found.")
        out.append(str(p.resolve()))
    if not out:
        raise UsageError("at least one --object is needed.")
    return out


def check_resolution(resolution: int) -> int:
    if not MIN_RESOLUTION <= int(resolution) <= MAX_RESOLUTION:
        raise UsageError(
            f"--resolution {resolution} is impossible; use {MIN_RESOLUTION}..{MAX_RESOLUTION} "
            "pixels (224 is the 3DIdent size)."
        )
    return int(resolution)


def require_bpy() -> None:
    """One clear error if Blender's Python module is missing."""
    if importlib.util.find_spec("bpy") is None:
        raise UsageError(
            f"rendering needs Blender as a Python module (bpy 5.0.1); install it with: "
            f"{INSTALL_HINT}"
        )


def blender_version() -> str | None:
    """bpy's version from its package metadata (without importing it)."""
    from importlib import metadata

    try:
        return metadata.version("bpy")
    except metadata.PackageNotFoundError:
        return None
