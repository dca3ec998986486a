"""Structural causal models over the factors: per factor its parents and a conditional law,
sampled in topological order (numpy only).

A factor is one of the ten raw latent columns (:data:`FACTOR_NAMES`) or the object class
(:data:`CLASS_FACTOR`, a discrete latent stored in the dataset's ``class`` column). Laws:

* ``uniform``: a root, uniform on ``[low, high]`` (default the raw range ``[-1, 1]``);
* ``constant``: a root fixed at ``value`` (a discrete factor with one value);
* ``grid``: a root on a finite grid ``values`` (probabilities ``probs``, default equal);
* ``categorical``: the object class, uniform over the classes or with ``probs``;
* ``normal``: a normal truncated to ``[low, high]`` whose mean is
  ``bias + sum(weights * parents)`` and whose standard deviation is ``scale``;
* ``table``: a normal truncated to ``[low, high]`` whose mean and scale are looked up per value
  of one discrete parent (the class, or a grid factor): ``mean = [...]``, ``scale = [...]``
  (or one number), one entry per value in order.

Undeclared factors are uniform roots on ``[-1, 1]``. :func:`scm_from_dict` validates a parsed
TOML table (an ``[scm.factors.<name>]`` preset section or a ``--scm`` file); an unknown factor
or key, a cycle, or a bad law is one :class:`UsageError` naming the file and the factor.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ident3d.errors import UsageError
from ident3d.latents.factors import FACTOR_NAMES

CLASS_FACTOR = "object_class"
LAWS = ("uniform", "constant", "grid", "categorical", "normal", "table")
_KEYS: dict[str, tuple[str, ...]] = {
    "uniform": ("law", "parents", "low", "high"),
    "constant": ("law", "parents", "value"),
    "grid": ("law", "parents", "values", "probs"),
    "categorical": ("law", "parents", "probs"),
    "normal": ("law", "parents", "weights", "bias", "scale", "low", "high"),
    "table": ("law", "parents", "mean", "scale", "low", "high"),
}
DISCRETE_LAWS = ("constant", "grid", "categorical")


def truncated_normal(
    mean: np.ndarray, scale: np.ndarray, low: float, high: float, rng: np.random.Generator
) -> np.ndarray:
    """Draws of ``N(mean, scale^2)`` truncated to ``[low, high]`` (exact, by the inverse CDF;
    computed on the side of the mean where the CDF is not close to 1, so means far outside the
    interval stay accurate). One uniform draw per element."""
    from scipy.special import ndtr, ndtri  # imported here: ident3d.latents stays light

    mean = np.asarray(mean, np.float64)
    scale = np.broadcast_to(np.asarray(scale, np.float64), mean.shape)
    a = (low - mean) / scale
    b = (high - mean) / scale
    u = rng.random(mean.shape)
    flip = a > 0  # the whole interval right of the mean: sample the mirrored problem
    a2 = np.where(flip, -b, a)
    b2 = np.where(flip, -a, b)
    pa, pb = ndtr(a2), ndtr(b2)
    x = ndtri(pa + u * (pb - pa))
    x = np.where(flip, -x, x)
    out = mean + scale * x
    return np.clip(out, low, high)  # only rounding can leave the interval


def truncated_normal_mean(
    mean: np.ndarray, scale: np.ndarray | float, low: float, high: float
) -> np.ndarray:
    """``E[X]`` of ``N(mean, scale^2)`` truncated to ``[low, high]``:
    ``mean + scale * (phi(a) - phi(b)) / (Phi(b) - Phi(a))`` (computed on the mirrored side
    when the interval lies right of the mean, as :func:`truncated_normal` samples it)."""
    from scipy.special import ndtr

    mean = np.asarray(mean, np.float64)
    scale = np.broadcast_to(np.asarray(scale, np.float64), mean.shape)
    a, b = (low - mean) / scale, (high - mean) / scale
    flip = a > 0
    a2, b2 = np.where(flip, -b, a), np.where(flip, -a, b)
    phi = lambda x: np.exp(-0.5 * x * x) / np.sqrt(2.0 * np.pi)  # noqa: E731
    shift = (phi(a2) - phi(b2)) / (ndtr(b2) - ndtr(a2))
    return mean + scale * np.where(flip, -shift, shift)


@dataclass(frozen=True)
class Node:
    """One factor of an SCM: its parents and its law's parameters (JSON-ready)."""

    name: str
    law: str
    parents: tuple[str, ...]
    params: Mapping[str, Any]

    @property
    def discrete(self) -> bool:
        return self.law in DISCRETE_LAWS

    def values(self, n_classes: int) -> list[float] | None:
        """The finite set of values of a discrete factor, in order (None: continuous)."""
        if self.law == "constant":
            return [float(self.params["value"])]
        if self.law == "grid":
            return [float(v) for v in self.params["values"]]
        if self.law == "categorical":
            return [float(c) for c in range(n_classes)]
        return None

    def to_config(self) -> dict[str, Any]:
        return {"law": self.law, "parents": list(self.parents), **dict(self.params)}


@dataclass(frozen=True)
class SCM:
    """A structural causal model over the factors; ``order`` is a topological order."""

    nodes: Mapping[str, Node]
    order: tuple[str, ...]
    n_classes: int = 1

    @property
    def has_class(self) -> bool:
        return CLASS_FACTOR in self.nodes

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` draws: raw latents ``(n, 10)`` and object classes ``(n,)`` (zeros without a
        class factor). Undeclared factors are drawn first (uniform on [-1, 1], in column
        order), then the declared ones in topological order."""
        raw = np.empty((n, len(FACTOR_NAMES)))
        cls = np.zeros(n, np.int64)
        free = [i for i, f in enumerate(FACTOR_NAMES) if f not in self.nodes]
        raw[:, free] = rng.uniform(-1.0, 1.0, (n, len(free)))

        def col(name: str) -> np.ndarray:
            return (
                cls.astype(np.float64) if name == CLASS_FACTOR else raw[:, FACTOR_NAMES.index(name)]
            )

        for name in self.order:
            node = self.nodes[name]
            p = node.params
            if node.law == "uniform":
                v = rng.uniform(p["low"], p["high"], n)
            elif node.law == "constant":
                v = np.full(n, float(p["value"]))
            elif node.law in ("grid", "categorical"):
                k = len(p["values"]) if node.law == "grid" else self.n_classes
                probs = p.get("probs")
                idx = rng.choice(k, size=n, p=None if probs is None else np.asarray(probs))
                if node.law == "categorical":
                    cls[:] = idx
                    continue
                v = np.asarray(p["values"], np.float64)[idx]
            elif node.law == "normal":
                mean = np.full(n, float(p["bias"]))
                for w, par in zip(p["weights"], node.parents, strict=True):
                    mean += float(w) * col(par)
                v = truncated_normal(mean, np.float64(p["scale"]), p["low"], p["high"], rng)
            else:  # table
                parent = self.nodes[node.parents[0]]
                levels = np.asarray(parent.values(self.n_classes), np.float64)
                pv = col(node.parents[0])
                idx = np.searchsorted(levels, pv) if _sorted(levels) else _index_of(levels, pv)
                mean = np.asarray(p["mean"], np.float64)[idx]
                scale = np.broadcast_to(np.asarray(p["scale"], np.float64), levels.shape)[idx]
                v = truncated_normal(mean, scale, p["low"], p["high"], rng)
            raw[:, FACTOR_NAMES.index(name)] = v
        return raw, cls

    def conditional_mean(self, name: str, parents: np.ndarray) -> np.ndarray:
        """The untruncated mean of a ``normal`` factor given parent values ``(n, k)``."""
        node = self.nodes[name]
        if node.law != "normal":
            raise UsageError(f"factor {name} has law {node.law}, not normal")
        w = np.asarray(node.params["weights"], np.float64)
        return float(node.params["bias"]) + np.asarray(parents, np.float64) @ w

    def edges(self) -> list[tuple[str, str]]:
        return [(p, c) for c in self.order for p in self.nodes[c].parents]

    def to_config(self) -> dict[str, Any]:
        """JSON-ready: ``{"factors": {name: {law, parents, ...}}, "order": [...]}``."""
        return {
            "factors": {n: self.nodes[n].to_config() for n in self.order},
            "order": list(self.order),
            "n_classes": self.n_classes,
        }

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> SCM:
        return scm_from_dict(
            {"factors": {k: _strip(v) for k, v in cfg["factors"].items()}},
            "scm config",
            n_classes=int(cfg.get("n_classes", 1)),
        )


def _strip(v: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(v)
    if not out.get("parents"):
        out.pop("parents", None)
    return out


def _sorted(a: np.ndarray) -> bool:
    return bool(np.all(np.diff(a) > 0))


def _index_of(levels: np.ndarray, values: np.ndarray) -> np.ndarray:
    return np.argmin(np.abs(values[:, None] - levels[None, :]), axis=1)


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))


def _numbers(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(_number(x) for x in v)


def scm_from_dict(
    data: Mapping[str, Any],
    source: str,
    n_classes: int = 1,
    aliases: Mapping[str, str] | None = None,
) -> SCM:
    """Validate a parsed SCM table ``{"factors": {name: {law = ..., ...}}}``.

    ``aliases`` maps other names (e.g. ``content.1`` for the first factor of the content
    block) to factor names. Every problem is a :class:`UsageError` naming ``source``."""

    def fail(msg: str) -> UsageError:
        return UsageError(f"{source}: {msg}")

    aliases = dict(aliases or {})
    for key in data:
        if key != "factors":
            raise fail(f"unknown key {key!r} (an SCM file holds [factors.<name>] tables)")
    factors = data.get("factors")
    if not isinstance(factors, Mapping) or not factors:
        raise fail("no [factors.<name>] table")
    known = (*FACTOR_NAMES, CLASS_FACTOR)

    def resolve(name: Any, what: str) -> str:
        if not isinstance(name, str):
            raise fail(f"{what} must be a factor name, got {name!r}")
        real = aliases.get(name, name)
        if real not in known:
            extra = f", {', '.join(sorted(aliases))}" if aliases else ""
            raise fail(f"unknown factor {name!r} in {what} (factors: {', '.join(known)}{extra})")
        return real

    nodes: dict[str, Node] = {}
    for raw_name, spec in factors.items():
        name = resolve(raw_name, "[factors]")
        where = f"factor {raw_name}"
        if name in nodes:
            raise fail(f"{where}: factor {name} is declared twice")
        if not isinstance(spec, Mapping):
            raise fail(f"{where} must be a table")
        law = spec.get("law")
        if law not in LAWS:
            raise fail(f"{where}: law must be one of {', '.join(LAWS)}, got {law!r}")
        for key in spec:
            if key not in _KEYS[law]:
                raise fail(f"{where}: unknown key {key!r} for law {law}")
        parents_in = spec.get("parents", [])
        if not isinstance(parents_in, list):
            raise fail(f"{where}: parents must be a list of factor names")
        parents = tuple(resolve(p, f"the parents of {raw_name}") for p in parents_in)
        if len(set(parents)) != len(parents):
            raise fail(f"{where}: a parent is listed twice")
        if name in parents:
            raise fail(f"{where}: a factor cannot be its own parent")
        params: dict[str, Any] = {}
        if (law == "categorical") != (name == CLASS_FACTOR):
            raise fail(
                f"{where}: the object class needs law categorical"
                if name == CLASS_FACTOR
                else f"{where}: law categorical is for {CLASS_FACTOR} only"
            )
        if law in ("uniform", "constant", "grid", "categorical") and parents:
            raise fail(f"{where}: law {law} is for a root (no parents)")
        low, high = spec.get("low", -1.0), spec.get("high", 1.0)
        if law in ("uniform", "normal", "table"):
            if not (_number(low) and _number(high)) or not low < high:
                raise fail(f"{where}: need low < high, got {low!r}, {high!r}")
            params.update(low=float(low), high=float(high))
        if law == "constant":
            if not _number(spec.get("value")):
                raise fail(f"{where}: constant needs a number 'value'")
            params["value"] = float(spec["value"])
        elif law == "grid":
            vals = spec.get("values")
            if not _numbers(vals) or len(set(vals)) != len(vals):
                raise fail(f"{where}: grid needs 'values', a list of distinct numbers")
            params["values"] = [float(v) for v in vals]
        if law in ("grid", "categorical") and "probs" in spec:
            k = len(params["values"]) if law == "grid" else n_classes
            probs = spec["probs"]
            if not _numbers(probs) or len(probs) != k or min(probs) < 0:
                raise fail(f"{where}: probs must be {k} non-negative numbers")
            if abs(sum(probs) - 1.0) > 1e-9:
                raise fail(f"{where}: probs must sum to 1, got {sum(probs)}")
            params["probs"] = [float(p) for p in probs]
        if law == "normal":
            if not parents:
                raise fail(f"{where}: law normal needs parents (use uniform for a root)")
            if CLASS_FACTOR in parents:
                raise fail(f"{where}: a class parent needs law table (a mean per class)")
            weights = spec.get("weights", [1.0] * len(parents))
            if not _numbers(weights) or len(weights) != len(parents):
                raise fail(f"{where}: weights must be {len(parents)} number(s), one per parent")
            bias = spec.get("bias", 0.0)
            if not _number(bias):
                raise fail(f"{where}: bias must be a number")
            params.update(weights=[float(w) for w in weights], bias=float(bias))
        if law in ("normal", "table"):
            scale = spec.get("scale")
            scales = scale if isinstance(scale, list) and law == "table" else [scale]
            if not _numbers(scales) or min(scales) <= 0:
                raise fail(f"{where}: scale must be a positive number (or, for table, a list)")
            params["scale"] = (
                [float(s) for s in scales] if isinstance(scale, list) else float(scale)
            )
        if law == "table":
            if len(parents) != 1:
                raise fail(f"{where}: law table needs exactly one discrete parent")
            if not _numbers(spec.get("mean")):
                raise fail(f"{where}: table needs 'mean', a list of numbers (one per value)")
            params["mean"] = [float(m) for m in spec["mean"]]
        nodes[name] = Node(name, law, parents, params)

    # parents: declared discrete ones for tables; sizes of tables
    for node in nodes.values():
        for par in node.parents:
            if par == CLASS_FACTOR and par not in nodes:
                raise fail(f"factor {node.name}: parent {CLASS_FACTOR} is not declared")
        if node.law == "table":
            par = nodes.get(node.parents[0])
            if par is None or not par.discrete:
                raise fail(f"factor {node.name}: the parent of a table must be a discrete factor")
            k = len(par.values(n_classes) or [])
            if len(node.params["mean"]) != k:
                raise fail(f"factor {node.name}: mean has {len(node.params['mean'])} entries, "
                           f"its parent {par.name} has {k} values")  # fmt: skip
            sc = node.params["scale"]
            if isinstance(sc, list) and len(sc) != k:
                raise fail(f"factor {node.name}: scale has {len(sc)} entries, need {k}")
    order = _topological(nodes, fail)
    return SCM(nodes, order, n_classes=max(1, int(n_classes)))


def _topological(nodes: Mapping[str, Node], fail: Any) -> tuple[str, ...]:
    """Kahn's algorithm over the declared factors (undeclared parents are roots); declaration
    order breaks ties, so the order (and so every draw) is fixed by the file."""
    indeg = {n: sum(p in nodes for p in nodes[n].parents) for n in nodes}
    order: list[str] = []
    ready = [n for n in nodes if indeg[n] == 0]
    while ready:
        n = ready.pop(0)
        order.append(n)
        for m in nodes:
            if n in nodes[m].parents:
                indeg[m] -= 1
                if indeg[m] == 0:
                    ready.append(m)
    if len(order) != len(nodes):
        cyc = [n for n in nodes if n not in order]
        raise fail(f"the graph has a cycle through {', '.join(cyc)}")
    return tuple(order)


def load_scm_file(
    path: str | Path, n_classes: int = 1, aliases: Mapping[str, str] | None = None
) -> tuple[dict[str, Any], str]:
    """Read a ``--scm`` TOML file (or a bundled name in ``scenes/scm/``): ``(table, source)``.
    Validation happens in :func:`scm_from_dict` once the aliases are known."""
    p = Path(path)
    if not p.suffix and not p.exists():
        from importlib import resources

        bundled = Path(str(resources.files("ident3d.presets"))) / "scm" / f"{p.name}.toml"
        if bundled.is_file():
            p = bundled
    if not p.is_file():
        raise UsageError(f"--scm {path}: file not found (give a .toml file or a bundled name).")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{p}: not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{p}: cannot read: {exc}") from None
    return data, str(p)
