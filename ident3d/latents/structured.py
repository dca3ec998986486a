"""The structured latent model: an SCM for the anchor, a pair structure for the positive
(content copied, style perturbed by a conditional, view-specific factors from their own law
per view), the object class as a latent; block-seeded like :class:`LatentModel`.

Per block ``b`` (``block_rng(seed, b)``), in this order: the anchor ``z`` (the SCM in
topological order, or uniform on [-1, 1]^10 without one), the positive's style columns
(``conditional.sample``, which copies every other column), then the view-specific columns of
each view. Without an SCM and view blocks this is exactly :class:`LatentModel` with the
conditional's ``dims`` (tested): ``--dims`` is the special case "style = dims, content = the
rest".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ident3d.errors import UsageError
from ident3d.latents.conditionals import AnyConditional, conditional_from_config
from ident3d.latents.factors import FACTOR_NAMES
from ident3d.latents.marginals import Uniform
from ident3d.latents.model import BLOCK_SIZE, block_rng
from ident3d.latents.pairs import PairStructure
from ident3d.latents.scm import CLASS_FACTOR, SCM
from ident3d.latents.spaces import Box


@dataclass(frozen=True)
class StructuredModel:
    """Latents with dependencies and block structure on the box ``[-1, 1]^10``."""

    scm: SCM | None = None
    structure: PairStructure | None = None
    conditional: AnyConditional | None = None

    def __post_init__(self) -> None:
        if self.structure is not None and self.conditional is not None:
            dims = getattr(self.conditional, "dims", None)
            want = self.structure.style_dims()
            if not set(dims or range(len(FACTOR_NAMES))) <= set(want):
                raise UsageError("the style conditional must act on the style factors only")

    space = Box(len(FACTOR_NAMES))

    @property
    def dim(self) -> int:
        return len(FACTOR_NAMES)

    @property
    def has_class(self) -> bool:
        return self.scm is not None and self.scm.has_class

    def sample_block(self, seed: int, b: int, pairs: bool) -> tuple[np.ndarray, np.ndarray]:
        """Block ``b``: raw latents ``(BLOCK_SIZE, 2, 10)`` (or ``(BLOCK_SIZE, 10)``) and the
        classes ``(BLOCK_SIZE,)``."""
        rng = block_rng(seed, b)
        if self.scm is not None:
            z, cls = self.scm.sample(BLOCK_SIZE, rng)
        else:
            z = Uniform().sample(self.space, BLOCK_SIZE, rng)
            cls = np.zeros(BLOCK_SIZE, np.int64)
        if not pairs:
            if self.structure is not None:
                self.structure.apply_views(z[:, None], rng)
            return z, cls
        zt = z.copy() if self.conditional is None else self.conditional.sample(z, self.space, rng)
        out = np.stack([z, zt], axis=1)
        if self.structure is not None:
            self.structure.apply_views(out, rng)
        return out, cls

    def sample_range(self, start: int, stop: int, seed: int, pairs: bool = True) -> np.ndarray:
        return self.sample_range_with_classes(start, stop, seed, pairs)[0]

    def sample_range_with_classes(
        self, start: int, stop: int, seed: int, pairs: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Samples ``start:stop`` and their classes; sample ``i`` is the same in any range."""
        if not 0 <= start <= stop:
            raise UsageError(f"bad sample range {start}:{stop}")
        shape = (stop - start, 2, self.dim) if pairs else (stop - start, self.dim)
        out = np.empty(shape)
        cls = np.zeros(stop - start, np.int64)
        for b in range(start // BLOCK_SIZE, -(-stop // BLOCK_SIZE)):
            blk, c = self.sample_block(seed, b, pairs)
            lo, hi = max(start, b * BLOCK_SIZE), min(stop, (b + 1) * BLOCK_SIZE)
            out[lo - start : hi - start] = blk[lo - b * BLOCK_SIZE : hi - b * BLOCK_SIZE]
            cls[lo - start : hi - start] = c[lo - b * BLOCK_SIZE : hi - b * BLOCK_SIZE]
        return out, cls

    def sample_pairs(self, n: int, seed: int) -> np.ndarray:
        return self.sample_range(0, n, seed, pairs=True)

    def sample(self, n: int, seed: int) -> np.ndarray:
        return self.sample_range(0, n, seed, pairs=False)

    def factor_table(
        self, table: list[dict[str, Any]], class_names: list[str] | None = None
    ) -> list[dict[str, Any]]:
        """``table`` with each factor's ``type`` (and ``values`` of discrete ones) from the SCM,
        plus the class factor's entry when the class is a latent."""
        return annotate_factor_table(table, self.scm, class_names)

    def to_config(self) -> dict[str, Any]:
        return {
            "type": "structured",
            "space": self.space.to_config(),
            "scm": None if self.scm is None else self.scm.to_config(),
            "pair_structure": None if self.structure is None else self.structure.to_manifest(),
            "conditional": None if self.conditional is None else self.conditional.to_config(),
        }

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> StructuredModel:
        return cls(
            scm=None if cfg.get("scm") is None else SCM.from_config(cfg["scm"]),
            structure=None
            if cfg.get("pair_structure") is None
            else PairStructure.from_manifest(cfg["pair_structure"]),
            conditional=conditional_from_config(cfg.get("conditional")),
        )


def annotate_factor_table(
    table: list[dict[str, Any]], scm: SCM | None, class_names: list[str] | None = None
) -> list[dict[str, Any]]:
    """Each entry gains ``type`` (``continuous``/``discrete``), discrete ones ``values`` (and
    ``fixed: true`` for a constant); with ``class_names`` an entry for the class factor
    (``column: "class"``, ``values`` 0..K-1, ``classes``) is appended."""
    out = []
    for row in table:
        row = dict(row)
        node = None if scm is None else scm.nodes.get(row["name"])
        if node is not None and node.discrete:
            row["type"] = "discrete"
            row["values"] = node.values(scm.n_classes)  # type: ignore[union-attr]
            if node.law == "constant":
                row["fixed"] = True
        else:
            row["type"] = "continuous"
        out.append(row)
    if class_names:
        out.append(
            {
                "index": None,
                "name": CLASS_FACTOR,
                "kind": "class",
                "column": "class",
                "type": "discrete",
                "values": list(range(len(class_names))),
                "classes": list(class_names),
                "scene_unit": "class",
                "description": "object class (the dataset's class column)",
            }
        )
    return out


def build_structured_model(
    preset_data: dict[str, Any],
    source: str,
    *,
    kind: str,
    values: dict[str, Any],
    explicit: set[str] | frozenset[str] = frozenset(),
    blocks: str | None = None,
    scm_file: str | None = None,
    n_classes: int = 1,
) -> StructuredModel | None:
    """The :class:`StructuredModel` a preset and the options ask for, or None when nothing
    structured is asked for (no ``[scm]``, no ``[pairs] default_blocks``, no ``--blocks``, no
    ``--scm``): then today's :class:`LatentModel` applies unchanged.

    ``values`` are the latent-model options (``pop_latent_options``); ``explicit`` names those
    given on the command line, which win over the preset's ``[pairs]`` style law. ``kind`` is
    the latent mode's kind (structured latents need ``box``)."""
    from ident3d.latents.conditionals import make_conditional
    from ident3d.latents.factors import parse_dims
    from ident3d.latents.pairs import dims_structure, parse_blocks
    from ident3d.latents.scm import load_scm_file, scm_from_dict

    pairs_cfg = preset_data.get("pairs") or {}
    spec = blocks or pairs_cfg.get("default_blocks")
    if blocks is None and values.get("dims") is not None:
        spec = None  # --dims replaces the preset's default assignment
    wanted = spec or scm_file or preset_data.get("scm")
    if not wanted:
        return None
    if kind != "box":
        raise UsageError(
            "dependent or block-structured latents (--scm, --blocks, a preset's [scm] or "
            "[pairs]) need a box-kind latent mode (e.g. --mode box)."
        )
    if blocks is not None and values.get("dims") is not None:
        raise UsageError("--dims and --blocks both choose the perturbed factors; give one.")
    if values.get("marginal", "uniform") != "uniform":
        raise UsageError(
            "--marginal applies to independent latents; with an SCM each factor's law is "
            "declared in it (law = 'normal', ...)."
        )
    structure = (
        parse_blocks(spec, preset_data.get("blocks"))
        if spec
        else dims_structure(parse_dims(values.get("dims"), len(FACTOR_NAMES)))
    )
    factors: dict[str, Any] = dict((preset_data.get("scm") or {}).get("factors") or {})
    src = source
    if scm_file is not None:
        data, src = load_scm_file(scm_file)
        for key in data:
            if key != "factors":
                raise UsageError(f"{src}: unknown key {key!r} (an SCM file holds [factors.*])")
        if not isinstance(data.get("factors"), dict):
            raise UsageError(f"{src}: no [factors.<name>] table")
        factors.update(data["factors"])
        if preset_data.get("scm"):
            src = f"{source} + {src}"
    aliases = structure.aliases() if structure is not None else {}
    scm = scm_from_dict({"factors": factors}, src, n_classes, aliases) if factors else None
    if scm is not None and structure is not None:
        for name in scm.nodes:
            if name in structure.factors("view") and scm.nodes[name].parents:
                raise UsageError(
                    f"{src}: factor {name} is view-specific (its law per view comes from the "
                    "block), so it cannot have parents in the SCM."
                )
    fixed = [n for n, node in scm.nodes.items() if node.law == "constant"] if scm else []
    if structure is not None:
        style: tuple[int, ...] | None = structure.style_dims(fixed)
    elif fixed:
        style = tuple(i for i, f in enumerate(FACTOR_NAMES) if f not in fixed)
    else:
        style = None
    cond = None
    if style is None or style:
        name = values.get("conditional", "normal")
        sigma = values.get("sigma", 0.1)
        if "conditional" not in explicit and "style_conditional" in pairs_cfg:
            name = pairs_cfg["style_conditional"]
        if "sigma" not in explicit and "style_sigma" in pairs_cfg:
            sigma = pairs_cfg["style_sigma"]
        if name == "none":
            raise UsageError("pairs need a conditional for their style factors (got 'none').")
        if name == "vmf":
            raise UsageError("the von Mises-Fisher conditional lives on a sphere, not a box.")
        cond = make_conditional(
            name,
            dim=len(FACTOR_NAMES),
            sigma=sigma,
            p=values.get("p", 2.0),
            kappa=values.get("kappa", 10.0),
            lambdas=values.get("lambdas"),
            ext_tol=values.get("ext_tol"),
            dims=list(style) if style is not None else None,
        )
    return StructuredModel(scm=scm, structure=structure, conditional=cond)
