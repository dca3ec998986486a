"""Pair structure per factor block: content (identical in both views), style (perturbed by a
conditional) and view-specific (its own law per view), as in 3DIdentBox and Causal3DIdent.

A preset names its blocks (``[blocks.<name>]`` with ``factors`` and, for a block that can be
view-specific, ``view1`` / ``view2``: one law per factor, ``"uniform"`` on [-1, 1] or a number
for a constant); ``--blocks content=hues,style=positions,view=rotations`` (or the preset's
``[pairs] default_blocks``) assigns the roles. :func:`parse_blocks` checks both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ident3d.errors import UsageError
from ident3d.latents.factors import FACTOR_NAMES
from ident3d.latents.scm import CLASS_FACTOR

ROLES = ("content", "style", "view")
_BLOCK_KEYS = ("factors", "view1", "view2", "description")


@dataclass(frozen=True)
class Block:
    """A named group of factors with one role; ``view_laws`` (view-specific blocks): per view a
    tuple with, per factor, ``"uniform"`` or a constant value."""

    name: str
    role: str
    factors: tuple[str, ...]
    view_laws: tuple[tuple[Any, ...], tuple[Any, ...]] | None = None

    def to_manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "role": self.role, "factors": list(self.factors)}
        if self.view_laws is not None:
            out["view_laws"] = [list(v) for v in self.view_laws]
        return out


@dataclass(frozen=True)
class PairStructure:
    """The blocks of a pair (every factor in at most one block; the others are style)."""

    blocks: tuple[Block, ...]

    def factors(self, role: str) -> tuple[str, ...]:
        return tuple(f for b in self.blocks if b.role == role for f in b.factors)

    def style_dims(self, fixed: Sequence[str] = ()) -> tuple[int, ...]:
        """Raw columns the style conditional perturbs: style blocks and factors in no block,
        except ``fixed`` ones (constants of the SCM, which stay constant in both views)."""
        kept = {f for b in self.blocks if b.role != "style" for f in b.factors} | set(fixed)
        return tuple(i for i, f in enumerate(FACTOR_NAMES) if f not in kept)

    def aliases(self) -> dict[str, str]:
        """``content.1`` ... : the k-th factor of the block of each role (when one block has it)."""
        out: dict[str, str] = {}
        for role in ROLES:
            for k, f in enumerate(self.factors(role), start=1):
                out[f"{role}.{k}"] = f
        return out

    def apply_views(self, pairs: np.ndarray, rng: np.random.Generator) -> None:
        """Overwrite the view-specific factors of ``(n, 2, 10)`` pairs in place: view ``v``'s
        column drawn from its own law (uniform on [-1, 1] or a constant)."""
        n = pairs.shape[0]
        for b in self.blocks:
            if b.role != "view" or b.view_laws is None:
                continue
            for v in range(pairs.shape[1]):
                for f, law in zip(b.factors, b.view_laws[v], strict=True):
                    c = FACTOR_NAMES.index(f)
                    pairs[:, v, c] = rng.uniform(-1.0, 1.0, n) if law == "uniform" else float(law)

    def to_manifest(self) -> list[dict[str, Any]]:
        return [b.to_manifest() for b in self.blocks]

    @classmethod
    def from_manifest(cls, blocks: Sequence[Mapping[str, Any]]) -> PairStructure:
        return cls(
            tuple(
                Block(
                    b["name"],
                    b["role"],
                    tuple(b["factors"]),
                    None if "view_laws" not in b else tuple(tuple(v) for v in b["view_laws"]),  # type: ignore[arg-type]
                )
                for b in blocks
            )
        )


def _check_law(v: Any) -> bool:
    return v == "uniform" or (isinstance(v, int | float) and not isinstance(v, bool))


def check_block_table(blocks: Any, source: str) -> dict[str, dict[str, Any]]:
    """Validate a preset's ``[blocks.<name>]`` tables; return them."""
    if not isinstance(blocks, Mapping) or not blocks:
        raise UsageError(f"{source}: [blocks] must hold [blocks.<name>] tables")
    seen: dict[str, str] = {}
    for name, spec in blocks.items():
        where = f"{source}: [blocks.{name}]"
        if not isinstance(spec, Mapping):
            raise UsageError(f"{where} must be a table")
        for key in spec:
            if key not in _BLOCK_KEYS:
                raise UsageError(f"{where}: unknown key {key!r}")
        facs = spec.get("factors")
        if not isinstance(facs, list) or not facs:
            raise UsageError(f"{where}: needs 'factors', a list of factor names")
        for f in facs:
            if f not in (*FACTOR_NAMES, CLASS_FACTOR):
                raise UsageError(f"{where}: unknown factor {f!r}")
            if f in seen:
                raise UsageError(f"{where}: factor {f} is already in block {seen[f]}")
            seen[f] = name
        for key in ("view1", "view2"):
            if key in spec:
                laws = spec[key]
                if not isinstance(laws, list) or len(laws) != len(facs):
                    raise UsageError(f"{where}: {key} needs one law per factor ({len(facs)})")
                if not all(_check_law(x) for x in laws):
                    raise UsageError(f"{where}: {key} laws are 'uniform' or numbers")
        if ("view1" in spec) != ("view2" in spec):
            raise UsageError(f"{where}: give both view1 and view2, or neither")
    return {k: dict(v) for k, v in blocks.items()}


def parse_blocks(spec: str, blocks: Mapping[str, Mapping[str, Any]] | None) -> PairStructure:
    """``content=hues,style=positions,view=rotations`` over the preset's named blocks.

    A role may take several blocks (``content=hues+positions``). Factors in no block are style.
    """
    if not blocks:
        raise UsageError("--blocks: this preset names no factor blocks ([blocks.<name>]).")
    out: list[Block] = []
    used: set[str] = set()
    items = [s.strip() for s in spec.split(",") if s.strip()]
    if not items:
        raise UsageError("--blocks is empty; write e.g. content=hues,style=positions.")
    for item in items:
        role, eq, names = item.partition("=")
        role = role.strip()
        if not eq or role not in ROLES:
            raise UsageError(
                f"--blocks {item!r}: write ROLE=BLOCK with ROLE one of {', '.join(ROLES)}."
            )
        for name in (n.strip() for n in names.split("+")):
            if name not in blocks:
                raise UsageError(
                    f"--blocks: unknown block {name!r} (this preset has {', '.join(blocks)})."
                )
            if name in used:
                raise UsageError(f"--blocks: block {name} is assigned twice.")
            used.add(name)
            b = blocks[name]
            facs = tuple(b["factors"])
            if role == "view":
                if "view1" not in b:
                    raise UsageError(f"--blocks: block {name} has no view1/view2 laws.")
                laws = (tuple(b["view1"]), tuple(b["view2"]))
                if CLASS_FACTOR in facs:
                    raise UsageError("--blocks: the object class cannot be view-specific.")
            else:
                laws = None
            if role == "style" and CLASS_FACTOR in facs:
                raise UsageError(
                    "--blocks: the object class cannot be style: the store keeps one class "
                    "per pair (make it content)."
                )
            out.append(Block(name, role, facs, laws))
    return PairStructure(tuple(out))


def dims_structure(dims: Sequence[int] | None) -> PairStructure | None:
    """Today's ``--dims``: the chosen factors are style, the others content (None: all)."""
    if dims is None:
        return None
    style = tuple(FACTOR_NAMES[i] for i in dims)
    content = tuple(f for f in FACTOR_NAMES if f not in style)
    blocks = [Block("dims", "style", style)]
    if content:
        blocks.append(Block("rest", "content", content))
    return PairStructure(tuple(blocks))
