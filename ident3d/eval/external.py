"""Encoders that ``ident3d train`` did not make: :func:`load_encoder` turns ``--encoder``
(``MODULE:CALLABLE``, ``FILE.py:CALLABLE``, ``torchvision:NAME`` or a TorchScript file),
``--weights`` / ``--weights-key`` and ``--features`` into an :class:`ExternalEncoder`: an
``nn.Module`` in eval mode plus the record of exactly what was loaded (file hashes).

Loading runs the user's own code (importing a module, a .py file or a TorchScript archive they
chose); weights are read with ``torch.load(..., weights_only=True)`` and never unpickled
unsafely. Nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import pickle
import re
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ident3d.errors import UsageError

ENCODER_FORMS = "MODULE:CALLABLE, FILE.py:CALLABLE, torchvision:NAME or a TorchScript file"


def sha256_of(path: str | Path) -> str:
    """SHA-256 of a file's bytes, lowercase hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class ExternalEncoder:
    """An encoder to evaluate: ``module`` (eval mode) and ``source``, the JSON-ready record of
    what it is (form, callable, files and their SHA-256, weights, features)."""

    module: nn.Module
    source: dict[str, Any] = field(default_factory=dict)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _where(exc: BaseException, path: Path | None) -> str:
    """`` (file.py:line)`` of the innermost frame of ``path`` in the traceback, if any."""
    frames = traceback.extract_tb(exc.__traceback__)
    for fr in reversed(frames):
        if path is None or Path(fr.filename).resolve() == path.resolve():
            return f" ({Path(fr.filename).name}:{fr.lineno})"
    return ""


def _import_target(target: str) -> tuple[Any, dict[str, Any]]:
    """Import ``target`` (a dotted module path or a .py file) and return it with its record."""
    record: dict[str, Any] = {}
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = Path(target)
        if not path.is_file():
            raise UsageError(f"--encoder: {path} does not exist (or is not a file)")
        name = f"_ident3d_user_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:  # pragma: no cover - any .py file has one
            raise UsageError(f"--encoder: cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        here = str(path.resolve().parent)  # the file may import its sibling modules
        if here not in sys.path:
            sys.path.insert(0, here)
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(name, None)
            raise UsageError(
                f"--encoder: importing {path} raised {_one_line(exc)}{_where(exc, path)}"
            ) from None
        record.update(file=str(path), sha256=sha256_of(path))
        return module, record
    cwd = os.getcwd()  # as `python -m`: modules of the current directory import
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(target)
    except ModuleNotFoundError as exc:
        raise UsageError(
            f"--encoder: no module named {exc.name or target!r} (give a module on the Python "
            "path or a path to a .py file)"
        ) from None
    except Exception as exc:
        raise UsageError(f"--encoder: importing {target} raised {_one_line(exc)}") from None
    file = getattr(module, "__file__", None)
    record["module_file"] = file
    if file and Path(file).is_file():
        record["sha256"] = sha256_of(file)
    return module, record


def _resolve_callable(spec: str) -> tuple[nn.Module, dict[str, Any]]:
    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise UsageError(f"--encoder must be {ENCODER_FORMS}; got {spec!r}")
    module, record = _import_target(target)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(
                f"--encoder: {target} has no attribute {attr!r} (no callable of that name)"
            )
        obj = getattr(obj, part)
    if isinstance(obj, nn.Module):
        model = obj
    elif callable(obj):
        try:
            model = obj()
        except Exception as exc:
            path = Path(record["file"]) if "file" in record else None
            raise UsageError(
                f"--encoder: calling {spec}() raised {_one_line(exc)}{_where(exc, path)}"
            ) from None
    else:
        raise UsageError(f"--encoder: {spec} is a {type(obj).__name__}, not a callable")
    if not isinstance(model, nn.Module):
        raise UsageError(
            f"--encoder: {spec}() returned a {type(model).__name__}, not a torch.nn.Module"
        )
    record.update(form="callable", callable=spec)
    return model, record


def _torchvision(name: str) -> tuple[nn.Module, dict[str, Any]]:
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)
    if name not in names:
        raise UsageError(
            f"--encoder torchvision:{name}: torchvision has no classification model of that "
            f"name (e.g. resnet18, resnet50, vit_b_16, efficientnet_b0)"
        )
    model = torchvision.models.get_model(name, weights=None)  # never downloads
    return model, {"form": "torchvision", "model": name, "torchvision": torchvision.__version__}


def _torchscript(path: Path) -> tuple[nn.Module, dict[str, Any]]:
    import warnings

    try:
        with warnings.catch_warnings():  # torch >= 2.10 deprecates TorchScript (still loads)
            warnings.simplefilter("ignore", FutureWarning)
            model = torch.jit.load(str(path), map_location="cpu")
    except Exception:
        raise UsageError(
            f"--encoder {path} is not a TorchScript file (saved with torch.jit.save); for a "
            "state dict use --encoder MODULE:CALLABLE --weights FILE"
        ) from None
    return model, {"form": "torchscript", "file": str(path), "sha256": sha256_of(path)}


def is_unsafe_pickle(exc: BaseException) -> bool:
    """Whether ``torch.load(weights_only=True)`` refused ``exc``'s file for its pickled
    objects (rather than failing to read it at all)."""
    msg = str(exc)
    # a file that is no pickle at all fails on its first byte ("Unsupported operand")
    return "weights only load failed" in msg.lower() and "Unsupported operand" not in msg


def unsafe_global(exc: BaseException) -> str:
    """`` (module.Name)``: the first global the refused file would have imported, if named."""
    m = re.search(r"GLOBAL ([\w.]+)", str(exc))
    return f" ({m.group(1)})" if m else ""


def load_state_dict_file(path: str | Path, key: str | None = None) -> dict[str, torch.Tensor]:
    """A state dict from ``path`` with ``torch.load(..., weights_only=True)``; ``key`` picks a
    nested entry (``"state_dict"``, or a dotted path such as ``"model.encoder"``)."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"--weights: {p} does not exist (or is not a file)")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not is_unsafe_pickle(exc):
            raise UsageError(f"--weights {p} is not a file that torch.load reads") from None
        raise UsageError(
            f"--weights {p} needs unsafe unpickling{unsafe_global(exc)}: it holds pickled "
            "Python objects, not only tensors, and torch.load(weights_only=True) refuses them; "
            "save the weights with torch.save(model.state_dict(), FILE)"
        ) from None
    except Exception:
        raise UsageError(f"--weights {p} is not a file that torch.load reads") from None
    if key:
        cur: Any = obj
        if isinstance(cur, dict) and key in cur:
            cur = cur[key]
        else:
            for part in key.split("."):
                if not isinstance(cur, dict) or part not in cur:
                    have = ", ".join(map(repr, list(cur)[:8])) if isinstance(cur, dict) else ""
                    raise UsageError(
                        f"--weights-key {key!r}: {p} has no entry {part!r}"
                        + (f" (it has {have})" if have else "")
                    )
                cur = cur[part]
        obj = cur
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        keys = ", ".join(map(repr, list(obj)[:8])) if isinstance(obj, dict) else ""
        raise UsageError(
            f"--weights {p}{f' [{key}]' if key else ''} is not a state dict of tensors"
            + (f"; pick the entry that is one with --weights-key (it has {keys})" if keys else "")
        )
    return obj


def _load_weights(model: nn.Module, path: str | Path, key: str | None) -> dict[str, Any]:
    sd = load_state_dict_file(path, key)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError:
        own = set(model.state_dict())
        missing = sorted(own - set(sd))
        unexpected = sorted(set(sd) - own)
        detail = []
        if missing:
            detail.append(f"{len(missing)} missing (e.g. {missing[0]!r})")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]!r})")
        if not detail:
            detail.append("tensor shapes differ")
        raise UsageError(
            f"--weights {path} do not match the encoder: {', '.join(detail)}; "
            "--weights-key picks a nested state dict"
        ) from None
    return {"path": str(path), "sha256": sha256_of(path), "key": key, "tensors": len(sd)}


class _Penultimate(nn.Module):
    """Record the input of ``head`` (the last linear layer) and return it."""

    def __init__(self, model: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.model = model
        self._feat: list[torch.Tensor] = []
        head.register_forward_hook(lambda _m, inp, _out: self._feat.append(inp[0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._feat.clear()
        self.model(x)
        if not self._feat:  # pragma: no cover - the head is part of the forward
            raise UsageError("--features penultimate: the last linear layer was not used")
        return self._feat[-1]


class _Layer(nn.Module):
    """The output of one named layer (an FX node), 4-D maps averaged over H and W."""

    def __init__(self, extractor: nn.Module, node: str) -> None:
        super().__init__()
        self.extractor = extractor
        self.node = node

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.extractor(x)["features"]
        return out.mean(dim=(2, 3)) if out.dim() == 4 else out


def _features(model: nn.Module, features: str, form: str) -> tuple[nn.Module, dict[str, Any]]:
    if features == "logits":
        return model, {"features": "logits", "note": "the module's own output"}
    if form == "torchscript":
        raise UsageError(
            f"--features {features}: a TorchScript encoder is used as saved (its output); "
            "drop --features"
        )
    if features == "penultimate":
        linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise UsageError(
                "--features penultimate: the encoder has no linear layer whose input to take; "
                "use --features logits or a layer name"
            )
        name, head = linears[-1]
        return _Penultimate(model, head), {
            "features": "penultimate",
            "note": f"input of the last linear layer {name!r}",
        }
    from torchvision.models.feature_extraction import (
        create_feature_extractor,
        get_graph_node_names,
    )

    try:
        _, nodes = get_graph_node_names(model)
    except Exception as exc:
        raise UsageError(
            f"--features {features}: the encoder cannot be traced by torch.fx to find its "
            f"layers ({_one_line(exc)}); use penultimate or logits"
        ) from None
    if features not in nodes and not any(nd.startswith(features + ".") for nd in nodes):
        sample = ", ".join(nodes[-6:])
        raise UsageError(
            f"--features {features}: no layer of that name (the last ones are {sample}); "
            "give penultimate, logits or a layer name"
        )
    ext = create_feature_extractor(model, return_nodes={features: "features"})
    return _Layer(ext, features), {
        "features": features,
        "note": "output of that layer (a module name: its last node); 4-D maps averaged "
        "over height and width",
    }


def load_encoder(
    encoder: str | nn.Module,
    weights: str | Path | None = None,
    weights_key: str | None = None,
    features: str | None = None,
    seed: int = 0,
) -> ExternalEncoder:
    """Build the encoder ``--encoder`` names (or wrap a module given directly), load
    ``weights`` into it and select ``features`` (default: ``penultimate`` for torchvision
    models, the module's own output otherwise). Models are built with the global torch
    generator seeded by ``seed`` (restored afterwards), so a random initialisation is
    reproducible. Returns it in eval mode on the CPU."""
    if isinstance(encoder, nn.Module):
        model, record = encoder, {"form": "module", "class": type(encoder).__qualname__}
    elif not isinstance(encoder, str) or not encoder.strip():
        raise UsageError(f"--encoder must be {ENCODER_FORMS}")
    elif encoder.endswith(".py"):
        raise UsageError(f"--encoder {encoder}: name the callable, as {encoder}:CALLABLE")
    else:
        # a model built without weights starts from the seeded global generator: reproducible
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            if encoder.startswith("torchvision:"):
                model, record = _torchvision(encoder.partition(":")[2])
            elif Path(encoder).is_file():
                model, record = _torchscript(Path(encoder))
            elif ":" in encoder:
                model, record = _resolve_callable(encoder)
            else:
                raise UsageError(
                    f"--encoder must be {ENCODER_FORMS}; {encoder!r} is none of these "
                    "(no such file)"
                )
        record["init_seed"] = int(seed)
    record["spec"] = encoder if isinstance(encoder, str) else record["class"]
    record["class"] = type(model).__qualname__
    if weights is not None:
        record["weights"] = _load_weights(model, weights, weights_key)
    elif weights_key is not None:
        raise UsageError("--weights-key goes with --weights FILE")
    feat = features or ("penultimate" if record["form"] == "torchvision" else "logits")
    model, frec = _features(model, feat, record["form"])
    record.update(frec)
    model.eval()
    record["parameters"] = int(sum(p.numel() for p in model.parameters()))
    return ExternalEncoder(model, record)
