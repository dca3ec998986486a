"""What each scored factor is: :class:`FactorInfo` (per column its type, ``continuous`` or
``discrete``, the values or class names of a discrete one, and the content / style / view
blocks of a pairs dataset), read from a dataset's manifest by :func:`dataset_factors`.

The manifest contract (``docs/format.md``): a ``factor_table`` entry may carry ``"type":
"continuous"`` or ``"discrete"`` (a discrete one also ``"values"``, and a class factor
``"classes"``: its names); a top-level ``"pair_structure"`` is null or a list of blocks
``{"name", "role": "content" | "style" | "view", "factors": [names]}``. Absent keys mean all
factors continuous and no blocks. A dataset with a class per sample (the ``class`` column of
the store, or an original Causal3DIdent folder) gets the class as one more discrete factor,
``class``, unless its factor table already has a class factor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ident3d.errors import DataError

TYPES = ("continuous", "discrete")
ROLES = ("content", "style", "view")
#: What the identifiability theory of multi-view contrastive learning predicts per block role
#: (von Kuegelgen et al. 2021; Daunhawer et al. 2023; Yao et al. 2024): the shared content is
#: recovered (block-identified), style and view-specific factors are not (beyond what they share
#: with the content through dependencies).
THEORY = {
    "content": "recoverable",
    "style": "not recoverable",
    "view": "not recoverable",
}
#: Name of the class factor appended for datasets with a class per sample.
CLASS_FACTOR = "class"


@dataclass
class FactorInfo:
    """Per factor column: ``names``, ``types`` (``continuous`` | ``discrete``), ``values`` (a
    discrete factor's grid, else None) and ``classes`` (a class factor's names, else None);
    ``blocks`` (block name -> columns) with their ``roles`` (block name -> role) and where
    they came from (``block_source``: ``pair_structure``, ``conditional dims`` or None)."""

    names: list[str]
    types: list[str]
    values: list[list[float] | None] = field(default_factory=list)
    classes: list[list[str] | None] = field(default_factory=list)
    blocks: dict[str, list[int]] = field(default_factory=dict)
    roles: dict[str, str] = field(default_factory=dict)
    block_source: str | None = None

    @property
    def discrete(self) -> list[int]:
        return [i for i, t in enumerate(self.types) if t == "discrete"]

    def labels(self, z: np.ndarray) -> np.ndarray:
        """Class indices ``(N, k)`` of the discrete columns of ``z``: the index of the nearest
        of the factor's ``values`` when it has them, else the rounded value."""
        cols = []
        for i in self.discrete:
            v = self.values[i] if i < len(self.values) else None
            if v:
                grid = np.asarray(v, np.float64)
                cols.append(np.abs(z[:, i, None] - grid[None, :]).argmin(1))
            else:
                cols.append(np.rint(z[:, i]).astype(np.int64))
        return np.stack(cols, 1) if cols else np.empty((len(z), 0), np.int64)


def _table_types(
    table: Sequence[dict[str, Any]] | None, names: Sequence[str], where: str
) -> tuple[list[str], list[list[float] | None], list[list[str] | None]]:
    d = len(names)
    types, values, classes = ["continuous"] * d, [None] * d, [None] * d
    rows = list(table or [])
    if len(rows) != d:  # the table does not describe these columns (e.g. periodic raw latents)
        return types, values, classes  # type: ignore[return-value]
    for i, row in enumerate(rows):
        t = row.get("type", "continuous")
        if t not in TYPES:
            raise DataError(
                f"{where}: factor {row.get('name', i)!r} has type {t!r}; "
                "use 'continuous' or 'discrete'"
            )
        types[i] = t
        if t == "discrete":
            v = row.get("values")
            if v is not None:
                if (
                    not isinstance(v, list)
                    or not v
                    or not all(isinstance(a, int | float) and not isinstance(a, bool) for a in v)
                ):
                    raise DataError(
                        f"{where}: discrete factor {row.get('name', i)!r} needs 'values', "
                        "a non-empty list of numbers"
                    )
                values[i] = [float(a) for a in v]  # type: ignore[call-overload]
            c = row.get("classes")
            if c is not None:
                classes[i] = [str(a) for a in c]  # type: ignore[call-overload]
    return types, values, classes  # type: ignore[return-value]


def _pair_blocks(
    structure: Any, names: Sequence[str], where: str
) -> tuple[dict[str, list[int]], dict[str, str]]:
    if not isinstance(structure, list):
        raise DataError(f"{where}: 'pair_structure' must be null or a list of blocks")
    blocks: dict[str, list[int]] = {}
    roles: dict[str, str] = {}
    for k, b in enumerate(structure):
        if not isinstance(b, dict) or not isinstance(b.get("factors"), list):
            raise DataError(f"{where}: pair_structure[{k}] must be a table with a 'factors' list")
        name = str(b.get("name", f"block{k}"))
        role = b.get("role")
        if role not in ROLES:
            raise DataError(
                f"{where}: pair_structure block {name!r} has role {role!r}; "
                "use content, style or view"
            )
        cols = []
        for f in b["factors"]:
            if f not in names:
                raise DataError(
                    f"{where}: pair_structure block {name!r} names factor {f!r}, which is not "
                    f"among the scored factors ({', '.join(names)})"
                )
            cols.append(list(names).index(f))
        if not cols:
            raise DataError(f"{where}: pair_structure block {name!r} lists no factors")
        blocks[name] = cols
        roles[name] = role
    return blocks, roles


def _dims_blocks(manifest: dict[str, Any], d: int) -> tuple[dict[str, list[int]], dict[str, str]]:
    """Content/style blocks of a pairs dataset rendered with ``--dims``: the conditional
    changed only those factors (style); the others are identical in both views (content)."""
    if manifest.get("kind") != "pairs" or int(manifest.get("raw_dim", -1)) != d:
        return {}, {}
    cond = ((manifest.get("config") or {}).get("latent_model") or {}).get("conditional") or {}
    dims = cond.get("dims")
    if not isinstance(dims, list) or not dims:
        return {}, {}
    style = sorted({int(i) for i in dims if 0 <= int(i) < d})
    content = [i for i in range(d) if i not in style]
    if not content or not style:
        return {}, {}
    return {"content": content, "style": style}, {"content": "content", "style": "style"}


def factor_info(
    names: Sequence[str],
    table: Sequence[dict[str, Any]] | None = None,
    pair_structure: Any = None,
    where: str = "manifest",
) -> FactorInfo:
    """The :class:`FactorInfo` of columns ``names`` from a factor table (types, values,
    classes: used only when it has one entry per column) and a ``pair_structure``."""
    types, values, classes = _table_types(table, names, where)
    info = FactorInfo(list(names), types, values, classes)
    if pair_structure is not None:
        info.blocks, info.roles = _pair_blocks(pair_structure, names, where)
        info.block_source = "pair_structure"
    return info


def dataset_factors(
    path: str | Path,
    z: np.ndarray,
    names: Sequence[str],
    classes: np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
) -> tuple[np.ndarray, FactorInfo]:
    """The factors of a dataset's samples ``z`` (raw latents, named ``names``) with their
    :class:`FactorInfo`, read from the store's manifest (``ident3d.store.open_dataset``): types
    from its ``factor_table``, blocks from its ``pair_structure`` (else, for pairs rendered
    with ``--dims``, content = the factors the conditional kept, style = those it changed).
    With ``classes`` (one class index per sample) and no class factor in the table, the class
    is appended as the discrete factor ``class`` (in the first content block of a pairs
    dataset: both views show the same object). Original folders have no manifest: all
    their latents are continuous."""
    from ident3d.data import detect_layout

    manifest: dict[str, Any] = {}
    if detect_layout(path) == "store":
        from ident3d.store import open_dataset

        manifest = open_dataset(path, allow_incomplete=True).manifest
    where = f"{Path(path) / 'manifest.json'}"
    structure = manifest.get("pair_structure")
    info = factor_info(names, manifest.get("factor_table"), structure, where)
    if structure is None:
        info.blocks, info.roles = _dims_blocks(manifest, len(names))
        info.block_source = "conditional dims" if info.blocks else None
    if classes is not None and not any(c is not None for c in info.classes):
        cls = np.asarray(classes).reshape(-1)[: len(z)]
        k = len(class_names) if class_names else (int(cls.max()) + 1 if cls.size else 0)
        z = np.concatenate([z, cls.astype(np.float64)[:, None]], 1)
        info.names.append(CLASS_FACTOR)
        info.types.append("discrete")
        info.values.append([float(v) for v in range(k)])
        info.classes.append(list(class_names) if class_names else None)
        # the store keeps one class per pair: both views show it, so it is content
        content = [b for b, role in info.roles.items() if role == "content"]
        if content:
            info.blocks[content[0]].append(len(info.names) - 1)
    return z, info


def scoring_kwargs(info: FactorInfo | None, z: np.ndarray, roles: bool = True) -> dict[str, Any]:
    """The keyword arguments of :func:`ident3d.eval.scoring.evaluate` that a dataset's factor
    information fixes: discrete factor types and labels, and (with ``roles``) the manifest's
    blocks and their content / style / view roles. Empty for ``None`` (synthetic data)."""
    if info is None:
        return {}
    kw: dict[str, Any] = {"factor_types": info.types}
    if info.discrete:
        kw["labels"] = info.labels(z)
    if roles and info.blocks:
        kw["blocks"] = dict(info.blocks)
        kw["block_roles"] = dict(info.roles) or None
    return kw
