"""A human-readable summary of a dataset: :func:`describe_dataset` (``ident3d info``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ident3d.store.format import MANIFEST_NAME, SCENE_DIM
from ident3d.store.manifest import read_manifest
from ident3d.store.reader import Dataset
from ident3d.store.verify import _file_problems


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _flatten(d: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(d, dict):
        out: list[tuple[str, Any]] = []
        for k, v in d.items():
            out += _flatten(v, f"{prefix}{k}.")
        return out
    return [(prefix[:-1], d)]


def _shard_problems(root: Path, m: dict[str, Any]) -> list[tuple[str, str]]:
    return [(e["file"], what) for e in m["shards"] for what in _file_problems(root / e["file"], e)]


def _structure_lines(m: dict[str, Any]) -> list[str]:
    """Discrete factors, the pair blocks and the SCM's equations, one line each."""
    out = []
    table = m.get("factor_table") or []
    discrete = [
        f"{r['name']} {r.get('values')}" + (" (fixed)" if r.get("fixed") else "")
        for r in table
        if r.get("type") == "discrete"
    ]
    if discrete:
        out.append(f"discrete     {'; '.join(discrete)}")
    for b in m.get("pair_structure") or []:
        laws = ""
        if b.get("view_laws"):
            laws = " (view 1 " + str(b["view_laws"][0]) + ", view 2 " + str(b["view_laws"][1]) + ")"
        out.append(f"block        {b['role']:<8} {b['name']}: {', '.join(b['factors'])}{laws}")
    scm = m.get("scm")
    if scm:
        for name in scm.get("order", []):
            out.append(f"scm          {name} ~ {_law_text(scm['factors'][name])}")
    return out


def _law_text(f: dict[str, Any]) -> str:
    law, par = f["law"], f.get("parents") or []
    if law == "uniform":
        return f"U({f['low']:g}, {f['high']:g})"
    if law == "constant":
        return f"{f['value']:g} (constant)"
    if law == "grid":
        return f"one of {f['values']}" + (f" with p {f['probs']}" if f.get("probs") else "")
    if law == "categorical":
        return "categorical over the classes" + (f" p {f['probs']}" if f.get("probs") else "")
    if law == "normal":
        terms = " + ".join(f"{w:g} {p}" for w, p in zip(f["weights"], par, strict=True))
        mean = (f"{f['bias']:g} + " if f["bias"] else "") + terms
        return f"N_t({mean}, {f['scale']:g}) on [{f['low']:g}, {f['high']:g}]"
    return (
        f"N_t(mean[{par[0]}], scale[{par[0]}]) on [{f['low']:g}, {f['high']:g}], "
        f"mean {f['mean']}, scale {f['scale']}"
    )


def describe_dataset(root: str | os.PathLike[str]) -> str:
    """A human summary of a dataset (what ``ident3d info`` prints). Listed shard files that are
    missing, of the wrong size or not HDF5 (:func:`check_shard_files`) make it say ``DAMAGED``
    and add one ``BAD <file>: <problem>`` line each."""
    root = Path(root)
    m = read_manifest(root)
    done = len({int(s["index"]) for s in m["shards"]})
    n_done = sum(int(s["count"]) for s in m["shards"])
    size = sum(int(s["bytes"]) for s in m["shards"])
    per = "pair" if m["kind"] == "pairs" else "image"
    cfg = m.get("config") or {}
    lines = [f"dataset      {root}"]
    problems = _shard_problems(root, m)
    state = "complete" if done == m["num_shards"] else f"INCOMPLETE, {n_done:,} written"
    if problems:
        bad = len({f for f, _ in problems})
        state = f"DAMAGED: {bad} of {done} listed shards missing or unreadable"
    lines.append(f"kind         {m['kind']}: {m['n']:,} {per}s ({state})")
    lines.append(
        f"shards       {done} of {m['num_shards']} complete, {m['shard_size']:,} samples each"
    )
    lines.append(
        f"images       {m['width']} x {m['height']} RGB uint8"
        + (" (2 views per sample)" if m["kind"] == "pairs" else "")
        + f", compression {m['compression']}"
    )
    lines.append(f"latents      raw {m['raw_dim']} columns, scene {m.get('scene_dim', SCENE_DIM)}")
    if m.get("has_class"):
        lines.append(f"classes      {', '.join(m.get('class_names') or []) or '(unnamed)'}")
    lines += _structure_lines(m)
    per_sample = size / n_done if n_done else 0.0
    lines.append(
        f"size         {_human_bytes(size)} on disk ({_human_bytes(per_sample)} per {per})"
    )
    for label, keys in (
        ("preset", ("preset",)),
        ("latent mode", ("latent_mode", "mode")),
        ("latent model", ("latent_model", "latents")),
        ("conditional", ("conditional",)),
        ("quality", ("quality",)),
        ("seed", ("seed", "seeds")),
    ):
        for key in keys:
            if key in cfg and cfg[key] is not None:
                value = cfg[key]
                if isinstance(value, dict) and isinstance(value.get("name"), str):
                    # a named record (preset, quality): its name and its scalar settings
                    extra = [
                        f"{k}={v}"
                        for k, v in value.items()
                        if k not in ("name", "path", "data") and isinstance(v, int | float | str)
                    ]
                    text = value["name"] + (f" ({', '.join(extra)})" if extra else "")
                else:
                    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
                lines.append(f"{label:<12} {text if len(text) <= 100 else text[:97] + '...'}")
                break
    v = m.get("versions", {})
    made = ", ".join(
        f"{k} {v[k]}" for k in ("ident3d", "python", "blender", "h5py", "hdf5") if k in v
    )
    lines.append(f"made         {m.get('created', '?')} with {made}")
    if n_done:  # the statistics come from the manifest: no shard is opened
        ds = Dataset(root, m)
        lines.append(
            "mean / std   "
            + " ".join(f"{x:.4f}" for x in ds.mean)
            + " / "
            + " ".join(f"{x:.4f}" for x in ds.std)
            + "  (R G B, [0, 1] units)"
        )
    for where, what in problems:
        lines.append(f"BAD {where}: {what}")
    flat = _flatten(cfg)
    if flat:
        lines.append("config")
        for key, value in flat[:60]:
            text = value if isinstance(value, str) else json.dumps(value)
            lines.append(f"  {key} = {text if len(text) <= 100 else text[:97] + '...'}")
        if len(flat) > 60:
            lines.append(f"  ... {len(flat) - 60} more keys in {root / MANIFEST_NAME}")
    return "\n".join(lines)
