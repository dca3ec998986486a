"""Shared test set-up: tests marked ``bpy`` or ``gpu`` skip cleanly where they cannot run."""

from __future__ import annotations

import importlib.util

import pytest

HAS_BPY = importlib.util.find_spec("bpy") is not None


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    cuda = None
    for item in items:
        if "bpy" in item.keywords and not HAS_BPY:
            item.add_marker(pytest.mark.skip(reason="bpy not installed (pip install '.[render]')"))
        if "gpu" in item.keywords:
            if cuda is None:
                cuda = _has_cuda()
            if not cuda:
                item.add_marker(pytest.mark.skip(reason="no CUDA device"))
