"""Scene presets: loading, schema validation, and per-sample scene parameters (no bpy).

A preset is a TOML file (``scenes/<name>.toml`` in the source tree, installed as the package
``ident3d.presets``) that states every number of a scene: camera, lamps, spotlight, ground,
object, material, render and quality settings, and the latent modes mapping raw latents to
the scene. :func:`load_preset` validates it against :data:`SCHEMA`; an unknown key or a bad
value raises :class:`PresetError` naming the key and the file.

:func:`scene_params` turns scene-unit latents into the exact numbers the Blender side sets
per frame (object location and rotation, spotlight location, three RGB colours), so the
arithmetic of the original generator is tested here, without Blender.
"""

from __future__ import annotations

import copy
import importlib.resources
import math
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ident3d.errors import UsageError
from ident3d.latents import N_FACTORS, LatentMapping, hsv_to_rgb
from ident3d.text.captions import check_templates, check_words
from ident3d.text.palettes import check_palettes


class PresetError(UsageError):
    """A preset that does not exist or does not validate."""


# ---------------------------------------------------------------------------------------------
# Schema: section -> key -> (checker, required). Checkers return an error string or None.
# ---------------------------------------------------------------------------------------------

Checker = Callable[[Any], str | None]


def _num(lo: float | None = None, hi: float | None = None, integer: bool = False) -> Checker:
    def check(v: Any) -> str | None:
        ok_type = isinstance(v, int) if integer else isinstance(v, int | float)
        if isinstance(v, bool) or not ok_type:
            return f"must be {'an integer' if integer else 'a number'}, got {v!r}"
        if not math.isfinite(float(v)):
            return f"must be finite, got {v!r}"
        if lo is not None and v < lo:
            return f"must be >= {lo}, got {v!r}"
        if hi is not None and v > hi:
            return f"must be <= {hi}, got {v!r}"
        return None

    return check


def _int(lo: int | None = None, hi: int | None = None) -> Checker:
    return _num(lo, hi, integer=True)


def _bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else f"must be true or false, got {v!r}"


def _str(*choices: str) -> Checker:
    def check(v: Any) -> str | None:
        if not isinstance(v, str):
            return f"must be a string, got {v!r}"
        if choices and v not in choices:
            return f"must be one of {', '.join(choices)}, got {v!r}"
        return None

    return check


def _vec(n: int, lo: float | None = None, hi: float | None = None) -> Checker:
    item = _num(lo, hi)

    def check(v: Any) -> str | None:
        if not isinstance(v, list) or len(v) != n:
            return f"must be a list of {n} numbers, got {v!r}"
        for x in v:
            err = item(x)
            if err:
                return f"element {err}"
        return None

    return check


REQ, OPT = True, False

QUALITY_SCHEMA: dict[str, tuple[Checker, bool]] = {
    "samples": (_int(1, 1 << 20), REQ),
    "adaptive_sampling": (_bool, REQ),
    "adaptive_threshold": (_num(0.0, 1.0), OPT),
    "adaptive_min_samples": (_int(0), OPT),
    "denoise": (_bool, REQ),
    "denoiser": (_str("OPENIMAGEDENOISE", "OPTIX"), OPT),
    "denoising_prefilter": (_str("NONE", "FAST", "ACCURATE"), OPT),
    "denoising_quality": (_str("HIGH", "BALANCED", "FAST"), OPT),
    "denoising_input_passes": (_str("RGB", "RGB_ALBEDO", "RGB_ALBEDO_NORMAL"), OPT),
    "max_bounces": (_int(0, 1024), REQ),
    "diffuse_bounces": (_int(0, 1024), OPT),
    "glossy_bounces": (_int(0, 1024), OPT),
    "transmission_bounces": (_int(0, 1024), OPT),
    "use_light_tree": (_bool, OPT),
    "light_sampling_threshold": (_num(0.0, 1.0), OPT),
    "sample_clamp_direct": (_num(0.0), OPT),
    "sample_clamp_indirect": (_num(0.0), OPT),
    "caustics": (_bool, OPT),
    "sampling_pattern": (_str("TABULATED_SOBOL", "BLUE_NOISE", "AUTOMATIC"), OPT),
    "description": (_str(), OPT),
}

LATENT_MODE_SCHEMA: dict[str, tuple[Checker, bool]] = {
    "kind": (_str("box", "periodic"), REQ),
    "position_scale": (_num(0.0), REQ),
    "angle_scale_turns": (_num(0.0, 1.0), OPT),
    "z_range": (_vec(2), OPT),
    "hue": (_str("colorsys", "wrap"), REQ),
}

SCHEMA: dict[str, dict[str, tuple[Checker, bool]]] = {
    "preset": {
        "name": (_str(), REQ),
        "description": (_str(), OPT),
        "format": (_int(1, 1), REQ),
    },
    "render": {
        "engine": (_str("CYCLES"), REQ),
        "resolution": (_int(16, 16384), REQ),
        "quality": (_str(), REQ),
        "transparent_max_bounces": (_int(0, 1024), REQ),
        "blur_glossy": (_num(0.0), REQ),
        "pixel_filter": (_str("BLACKMAN_HARRIS", "GAUSSIAN", "BOX"), REQ),
        "filter_width": (_num(0.01, 10.0), REQ),
        "view_transform": (_str("Standard", "Filmic", "AgX", "Raw"), REQ),
        "look": (_str(), OPT),
        "display_device": (_str("sRGB"), REQ),
        "film_transparent": (_bool, REQ),
        "use_persistent_data": (_bool, OPT),
        "dither_intensity": (_num(0.0, 10.0), OPT),
        "seed_per_sample": (_bool, OPT),
    },
    "camera": {
        "location": (_vec(3), REQ),
        "target": (_vec(3), REQ),
        "lens_mm": (_num(1.0, 5000.0), REQ),
        "sensor_width_mm": (_num(1.0, 500.0), REQ),
        "sensor_fit": (_str("AUTO", "HORIZONTAL", "VERTICAL"), REQ),
        "clip_start": (_num(1e-6), REQ),
        "clip_end": (_num(1e-6), REQ),
    },
    "world": {
        "color": (_vec(3, 0.0), REQ),
        "strength": (_num(0.0), REQ),
    },
    "sun": {
        "strength": (_num(0.0), REQ),
        "angle_rad": (_num(0.0, math.pi), REQ),
        "rotation_deg": (_vec(3), REQ),
    },
    "area_light": {
        "location": (_vec(3), REQ),
        "target": (_vec(3), REQ),
        "shape": (_str("SQUARE", "RECTANGLE", "DISK", "ELLIPSE"), REQ),
        "size": (_num(0.0), REQ),
        "power_w": (_num(0.0), REQ),
    },
    "spotlight": {
        "power_w": (_num(0.0), REQ),
        "spot_size_deg": (_num(1.0, 180.0), REQ),
        "spot_blend": (_num(0.0, 1.0), REQ),
        "shadow_soft_size": (_num(0.0), REQ),
        "radius": (_num(0.0), REQ),
        "height": (_num(), REQ),
        "track_axis": (_str("TRACK_NEGATIVE_Z", "TRACK_Z"), REQ),
        "up_axis": (_str("UP_X", "UP_Y", "UP_Z"), REQ),
        "base_color": (_vec(3, 0.0), REQ),
        "saturation": (_num(0.0, 1.0), REQ),
        "value": (_num(0.0), REQ),
    },
    "ground": {
        "size": (_num(0.0), REQ),
        "saturation": (_num(0.0, 1.0), REQ),
        "value": (_num(0.0), REQ),
    },
    "object": {
        "shape": (_str(), REQ),
        "size": (_num(1e-6), REQ),
        "dimensions": (_vec(3, 0.0), OPT),
        "rotation_mode": (_str("XYZ"), REQ),
        "z_lift": (_num(), REQ),
        "saturation": (_num(0.0, 1.0), REQ),
        "value": (_num(0.0), REQ),
        "classes": (lambda v: _check_classes(v), OPT),
    },
    "material": {
        "type": (_str("rubber"), OPT),
        "name": (_str(), REQ),
        "diffuse_roughness": (_num(0.0, 1.0), REQ),
        "sheen_distribution": (_str("ASHIKHMIN", "MICROFIBER"), REQ),
        "sheen_roughness": (_num(0.0, 1.0), REQ),
        "sheen_weight": (_num(0.0), OPT),
        "fresnel_ior": (_num(1.0, 10.0), REQ),
        "glossy_distribution": (_str("BECKMANN", "GGX", "ASHIKHMIN_SHIRLEY", "MULTI_GGX"), REQ),
        "glossy_color": (_vec(3, 0.0, 1.0), REQ),
        "glossy_roughness": (_num(0.0, 1.0), REQ),
        "glossy_fresnel_ior": (_num(1.0, 10.0), REQ),
    },
}

# The metallic material (``[material] type = "metal"``): the "MyMetal" node group of the
# original assets (cl-ica tools/3dident/data/materials/MyMetal.blend, measured with bpy 5.0.1):
# two anisotropic glossy BSDFs fed the colour, mixed by a constant factor.
METAL_SCHEMA: dict[str, tuple[Checker, bool]] = {
    "type": (_str("metal"), REQ),
    "name": (_str(), REQ),
    "glossy_distribution": (_str("BECKMANN", "GGX", "ASHIKHMIN_SHIRLEY", "MULTI_GGX"), REQ),
    "roughness_1": (_num(0.0, 1.0), REQ),
    "roughness_2": (_num(0.0, 1.0), REQ),
    "anisotropy": (_num(-1.0, 1.0), REQ),
    "anisotropy_rotation": (_num(0.0, 1.0), REQ),
    "mix_factor": (_num(0.0, 1.0), REQ),
}

#: What ``[views.0]`` / ``[views.1]`` may change for one view of a pair: the object's material
#: (a whole material table) and the per-frame colour and placement settings.
VIEW_KEYS: dict[str, tuple[str, ...]] = {
    "material": (),
    "object": ("saturation", "value", "z_lift"),
    "spotlight": ("saturation", "value"),
    "ground": ("saturation", "value"),
}

PAIRS_SCHEMA: dict[str, tuple[Checker, bool]] = {
    "default_blocks": (_str(), OPT),
    "style_conditional": (_str("normal", "laplace", "gennormal"), OPT),
    "style_sigma": (_num(1e-9), OPT),
    "description": (_str(), OPT),
}

# Optional sections: checked when present.
OPTIONAL_SCHEMA: dict[str, dict[str, tuple[Checker, bool]]] = {
    # The teapot's placement (the original's asset): scale * Rz(rotation_z_deg) * (p - origin)
    # of the tessellated patch points p, not normalised. Without it the teapot is centred and
    # scaled to S like every other shape.
    "teapot": {
        "segments": (_int(1, 64), REQ),
        "scale": (_num(1e-6), REQ),
        "rotation_z_deg": (_num(-360.0, 360.0), REQ),
        "origin": (_vec(3), REQ),
    },
    # Image/text datasets (Multimodal3DIdent): caption words, templates and palettes, and how
    # the image latents map to the scene (ident3d.latents.multimodal, docs/datasets.md).
    "multimodal": {
        "shape_names": (check_words, REQ),
        "x_names": (check_words, REQ),
        "y_names": (check_words, REQ),
        "templates": (check_templates, REQ),
        "palettes": (check_palettes, REQ),
        "grid": (lambda v: _check_grid(v), REQ),
        "z": (_num(), REQ),
        "rotation_range_deg": (_vec(2, -360.0, 360.0), REQ),
        "spot_angle_range_deg": (_vec(2, -360.0, 360.0), REQ),
        "light_hue_range": (_vec(2, -1.0, 1.0), REQ),
        "position_dependent_color": (_bool, REQ),
    },
}


def _check_grid(v: Any) -> str | None:
    if not isinstance(v, list) or not v:
        return f"must be a non-empty list of numbers, got {v!r}"
    return _vec(len(v))(v)


BUILTIN_SHAPES = ("teapot", "suzanne", "torus", "cube", "cylinder", "sphere", "cone")
MESH_SUFFIXES = (".obj", ".ply", ".stl", ".glb", ".gltf", ".blend")


def _check_classes(v: Any) -> str | None:
    if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
        return f"must be a non-empty list of shape names or mesh paths, got {v!r}"
    return None


def _check_table(
    where: str, table: Any, schema: dict[str, tuple[Checker, bool]], errors: list[str]
) -> None:
    if not isinstance(table, dict):
        errors.append(f"[{where}] must be a table")
        return
    for key, value in table.items():
        if key not in schema:
            errors.append(f"unknown key '{where}.{key}'")
            continue
        err = schema[key][0](value)
        if err:
            errors.append(f"'{where}.{key}' {err}")
    for key, (_, required) in schema.items():
        if required and key not in table:
            errors.append(f"missing key '{where}.{key}'")


#: Sections of the dependent / multi-view latents (checked by :func:`_check_structure`).
EXTRA_SECTIONS = ("scm", "blocks", "pairs", "views")


def _check_material(where: str, table: Any, errors: list[str]) -> None:
    kind = table.get("type", "rubber") if isinstance(table, dict) else "rubber"
    _check_table(where, table, METAL_SCHEMA if kind == "metal" else SCHEMA["material"], errors)


def _check_structure(data: dict[str, Any], source: str, errors: list[str]) -> None:
    """``[scm]`` (its factors are validated by ``ident3d.latents.scm_from_dict`` when the
    latents are built), ``[blocks.*]``, ``[pairs]`` and ``[views.0|1]``."""
    if "scm" in data:
        scm = data["scm"]
        if not isinstance(scm, dict) or set(scm) != {"factors"}:
            errors.append("[scm] must hold only [scm.factors.<name>] tables")
    if "blocks" in data:
        from ident3d.latents.pairs import check_block_table

        try:
            check_block_table(data["blocks"], "preset")
        except UsageError as exc:
            errors.append(str(exc).removeprefix("preset: "))
    if "pairs" in data:
        _check_table("pairs", data["pairs"], PAIRS_SCHEMA, errors)
    views = data.get("views")
    if views is None:
        return
    if not isinstance(views, dict):
        errors.append("[views] must hold [views.0] and/or [views.1] tables")
        return
    for v, table in views.items():
        if v not in ("0", "1") or not isinstance(table, dict):
            errors.append(f"unknown view [views.{v}] (views are 0, the anchor, and 1)")
            continue
        for section, sub in table.items():
            where = f"views.{v}.{section}"
            if section not in VIEW_KEYS:
                errors.append(f"unknown section [{where}] (a view may set {', '.join(VIEW_KEYS)})")
            elif section == "material":
                _check_material(where, sub, errors)
            elif not isinstance(sub, dict):
                errors.append(f"[{where}] must be a table")
            else:
                for key, value in sub.items():
                    if key not in VIEW_KEYS[section]:
                        errors.append(f"unknown key '{where}.{key}' (a view may set "
                                      f"{', '.join(VIEW_KEYS[section])})")  # fmt: skip
                        continue
                    err = SCHEMA[section][key][0](value)
                    if err:
                        errors.append(f"'{where}.{key}' {err}")


def view_preset(preset: Preset, view: int) -> Preset:
    """The preset as view ``view`` of a pair sees it: ``[views.<view>]`` merged over it."""
    over = (preset.data.get("views") or {}).get(str(view))
    if not over:
        return preset
    data = copy.deepcopy(preset.data)
    for section, table in over.items():
        if section == "material":
            data["material"] = copy.deepcopy(table)
        else:
            data[section].update(table)
    data.pop("views")
    return Preset(preset.name, preset.path, data)


def view_materials(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The object material of each view (0, 1) of a preset's data."""
    views = data.get("views") or {}
    return [dict((views.get(str(v)) or {}).get("material", data["material"])) for v in (0, 1)]


def validate_preset(data: dict[str, Any], source: str) -> None:
    """Check a parsed preset against :data:`SCHEMA`; raise :class:`PresetError` on the first
    problems (all of them listed, each naming the key), prefixed by ``source``."""
    errors: list[str] = []
    for section in data:
        if section not in (*SCHEMA, *OPTIONAL_SCHEMA, "quality", "latents", *EXTRA_SECTIONS):
            errors.append(f"unknown section [{section}]")
    for section, schema in OPTIONAL_SCHEMA.items():
        if section in data:
            _check_table(section, data[section], schema, errors)
    for section, schema in SCHEMA.items():
        if section not in data:
            errors.append(f"missing section [{section}]")
        elif section == "material":
            _check_material("material", data[section], errors)
        else:
            _check_table(section, data[section], schema, errors)
    _check_structure(data, source, errors)
    quality = data.get("quality")
    if not isinstance(quality, dict) or not quality:
        errors.append("missing section [quality.<name>] (at least one quality preset)")
    else:
        for name, table in quality.items():
            _check_table(f"quality.{name}", table, QUALITY_SCHEMA, errors)
        default_q = data.get("render", {}).get("quality")
        if isinstance(default_q, str) and default_q not in quality:
            errors.append(f"'render.quality' names {default_q!r}, which is not a [quality.*] table")
    latents = data.get("latents")
    if not isinstance(latents, dict):
        errors.append("missing section [latents]")
    else:
        for key in latents:
            if key not in ("default_mode", "modes"):
                errors.append(f"unknown key 'latents.{key}'")
        modes = latents.get("modes")
        if not isinstance(modes, dict) or not modes:
            errors.append("missing section [latents.modes.<name>]")
        else:
            for name, table in modes.items():
                _check_table(f"latents.modes.{name}", table, LATENT_MODE_SCHEMA, errors)
            dm = latents.get("default_mode")
            if dm not in modes:
                errors.append(
                    f"'latents.default_mode' must name one of {', '.join(modes)}, got {dm!r}"
                )
    if errors:
        shown = "; ".join(errors[:5]) + (
            f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        )
        raise PresetError(f"{source}: {shown}")


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def presets_dir() -> Path:
    """The folder of the bundled presets (``scenes/`` in the source tree)."""
    return Path(str(importlib.resources.files("ident3d.presets")))


def list_presets() -> list[str]:
    """Names of the bundled presets."""
    return sorted(p.stem for p in presets_dir().glob("*.toml"))


@dataclass(frozen=True)
class Preset:
    """A validated scene preset. ``data`` is the parsed TOML (treat it as read-only)."""

    name: str
    path: str
    data: dict[str, Any]

    def quality(self, name: str | None = None) -> dict[str, Any]:
        """The settings of a quality preset (default: ``render.quality``)."""
        name = name or self.data["render"]["quality"]
        q = self.data["quality"]
        if name not in q:
            raise PresetError(f"unknown quality {name!r} (preset {self.name} has {', '.join(q)})")
        return dict(q[name])

    @property
    def quality_names(self) -> list[str]:
        return list(self.data["quality"])

    @property
    def mode_names(self) -> list[str]:
        return list(self.data["latents"]["modes"])

    def mapping(self, mode: str | None = None) -> LatentMapping:
        """The raw-to-scene mapping of a latent mode (default: ``latents.default_mode``)."""
        mode = mode or self.data["latents"]["default_mode"]
        modes = self.data["latents"]["modes"]
        if mode not in modes:
            raise PresetError(
                f"unknown latent mode {mode!r} (preset {self.name} has {', '.join(modes)})"
            )
        return LatentMapping.from_preset_mode(mode, modes[mode])

    @property
    def object_size(self) -> float:
        """S: the largest side of the object's bounding box, in scene units."""
        return float(self.data["object"]["size"])

    @property
    def object_classes(self) -> list[str]:
        """Object shapes of a multi-class dataset (``object.classes``), else the one shape."""
        obj = self.data["object"]
        return list(obj.get("classes", [obj["shape"]]))

    def with_overrides(self, **overrides: Any) -> Preset:
        """A copy with dotted keys replaced, e.g. ``{"render.resolution": 64}``; validated."""
        data = copy.deepcopy(self.data)
        for dotted, value in overrides.items():
            if value is None:
                continue
            node = data
            *parents, leaf = dotted.split(".")
            for key in parents:
                node = node.setdefault(key, {})
            node[leaf] = value
        validate_preset(data, f"{self.path} (with overrides)")
        return Preset(self.name, self.path, data)

    def to_config(self) -> dict[str, Any]:
        """JSON-ready record of the resolved preset (for manifests and run configs)."""
        return {"name": self.name, "path": self.path, "data": copy.deepcopy(self.data)}


def load_preset(name_or_path: str | Path = "3dident", **overrides: Any) -> Preset:
    """Load and validate a preset by bundled name (``3dident``) or by path to a TOML file.

    ``overrides`` are dotted keys (``**{"render.resolution": 64}``) applied after loading.
    """
    s = str(name_or_path)
    if s.endswith(".toml") or "/" in s or Path(s).is_file():
        path = Path(s)
        if not path.is_file():
            raise PresetError(f"preset file not found: {path}")
    else:
        path = presets_dir() / f"{s}.toml"
        if not path.is_file():
            raise PresetError(f"unknown preset {s!r} (bundled: {', '.join(list_presets())})")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise PresetError(f"{path}: not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PresetError(f"{path}: cannot read: {exc}") from None
    validate_preset(data, str(path))
    preset = Preset(data["preset"]["name"], str(path), data)
    return preset.with_overrides(**overrides) if overrides else preset


# ---------------------------------------------------------------------------------------------
# Per-sample scene parameters
# ---------------------------------------------------------------------------------------------

SCENE_PARAM_KEYS = (
    "object_location",
    "object_rotation",
    "spot_location",
    "object_color",
    "spot_color",
    "ground_color",
)


def scene_params(
    preset: Preset, scene_latents: np.ndarray, mode: str | None = None
) -> dict[str, np.ndarray]:
    """Scene-unit latents ``(N, 10)`` -> the numbers the renderer sets per frame.

    * ``object_location`` = ``(x, y, z + z_lift * S)``
    * ``object_rotation`` = ``(alpha, beta, gamma)`` (XYZ Euler, radians)
    * ``spot_location`` = ``(r sin(theta), r cos(theta), height + S)``
    * ``object_color``, ``spot_color``, ``ground_color``: ``hsv_to_rgb(angle / (2 pi), s, v)``
      with each part's saturation and value from the preset and the mode's hue mapping
      (``colorsys``: exactly Python's ``colorsys``, out-of-gamut values included).
    All arrays are ``(N, 3)`` float64.
    """
    lat = np.asarray(scene_latents, dtype=np.float64)
    if lat.ndim != 2 or lat.shape[1] != N_FACTORS:
        raise UsageError(f"scene latents must be (N, {N_FACTORS}), got {lat.shape}")
    d = preset.data
    hue_mode = preset.mapping(mode).hue
    size = preset.object_size
    spot = d["spotlight"]
    obj = d["object"]
    ground = d["ground"]
    loc = lat[:, 0:3].copy()
    loc[:, 2] += float(obj["z_lift"]) * size
    theta = lat[:, 6]
    r = float(spot["radius"])
    spot_loc = np.stack(
        [r * np.sin(theta), r * np.cos(theta), np.full_like(theta, float(spot["height"]) + size)],
        axis=1,
    )
    turn = 2.0 * math.pi
    return {
        "object_location": loc,
        "object_rotation": lat[:, 3:6].copy(),
        "spot_location": spot_loc,
        "object_color": hsv_to_rgb(lat[:, 7] / turn, obj["saturation"], obj["value"], hue_mode),
        "spot_color": hsv_to_rgb(lat[:, 8] / turn, spot["saturation"], spot["value"], hue_mode),
        "ground_color": hsv_to_rgb(
            lat[:, 9] / turn, ground["saturation"], ground["value"], hue_mode
        ),
    }
