"""A non-editable build ships the Blender code and the presets with the library."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_blender_package_and_presets(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            str(ROOT),
            "-w",
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("ident3d-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "ident3d/presets/3dident.toml" in names
    assert "ident3d/blender/__init__.py" in names
    for src in (ROOT / "blender").glob("*.py"):
        assert f"ident3d/blender/{src.name}" in names
    for mesh in (ROOT / "scenes" / "meshes").iterdir():
        assert f"ident3d/presets/meshes/{mesh.name}" in names
    assert any(n.endswith("entry_points.txt") for n in names)


def test_only_the_blender_package_imports_bpy():
    offenders = []
    for path in (ROOT / "ident3d").rglob("*.py"):
        text = path.read_text()
        if re.search(r"^\s*(import bpy|from bpy\b)", text, re.MULTILINE):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_every_package_under_ident3d_is_listed_in_pyproject():
    import tomllib

    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "ident3d").rglob("__init__.py")
    }
    assert found - listed == set()
