"""Captions from text latents: the Multimodal3DIdent templates (generate_text.py lines 8-32).

A template is a Python format string whose slots are ``{SHAPE}``, ``{COLOR}``, ``{XPOS}`` and
``{YPOS}`` (each exactly as in the generator); the words come from the preset's
``[multimodal]`` table (``shape_names``, ``x_names``, ``y_names``) and the colour name from
:mod:`ident3d.text.palettes`. No number or word of the templates lives here: they are data.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import Any

import numpy as np

from ident3d.errors import UsageError

SLOTS = ("SHAPE", "COLOR", "XPOS", "YPOS")


def template_problem(template: Any) -> str | None:
    """Why ``template`` is not a usable caption template (None when it is)."""
    if not isinstance(template, str) or not template.strip():
        return f"must be a non-empty string, got {template!r}"
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        return f"{template!r} is not a format string ({exc})"
    unknown = [f for f in fields if f not in SLOTS]
    if unknown:
        return f"{template!r} has unknown slot {{{unknown[0]}}} (slots: {', '.join(SLOTS)})"
    missing = [s for s in SLOTS if s not in fields]
    if missing:
        return f"{template!r} lacks the slot {{{missing[0]}}}"
    if "\n" in template:
        return f"{template!r} holds a line break (captions are one line each)"
    return None


def check_templates(value: Any) -> str | None:
    """Schema checker of a preset's template list."""
    if not isinstance(value, list) or not value:
        return f"must be a non-empty list of templates, got {value!r}"
    for i, t in enumerate(value):
        err = template_problem(t)
        if err:
            return f"template {i} {err}"
    return None


def check_words(value: Any) -> str | None:
    """Schema checker of a word list (shape, x or y names)."""
    if not isinstance(value, list) or not value:
        return f"must be a non-empty list of words, got {value!r}"
    if not all(isinstance(v, str) and v and v == v.strip() and "\n" not in v for v in value):
        return f"must hold non-empty single-line words, got {value!r}"
    return None


def make_captions(
    templates: Sequence[str],
    shape_names: Sequence[str],
    x_names: Sequence[str],
    y_names: Sequence[str],
    phrasing: np.ndarray,
    shape: np.ndarray,
    xpos: np.ndarray,
    ypos: np.ndarray,
    color_names: Sequence[str],
) -> list[str]:
    """One caption per sample: ``templates[phrasing].format(SHAPE=..., YPOS=..., XPOS=...,
    COLOR=...)`` (generate_text.py lines 66-72)."""
    for t in templates:
        err = template_problem(t)
        if err:
            raise UsageError(f"caption template {err}.")
    out = []
    for j, s, x, y, c in zip(phrasing, shape, xpos, ypos, color_names, strict=True):
        out.append(
            templates[int(j)].format(
                SHAPE=shape_names[int(s)], YPOS=y_names[int(y)], XPOS=x_names[int(x)], COLOR=c
            )
        )
    return out
