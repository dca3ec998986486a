"""The Blender scene: every factor has its visible effect, teapot geometry, meshes, devices.

Frames are tiny (48 x 48, 4 samples, no denoising) and every comparison renders with the same
Cycles seed, so two frames differ only where the scene does. Object pixels are found by
rendering the same frame with two different object colours (with no light bounces the
object's colour reaches no other pixel).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ident3d.blender.teapot import load_patches, place, tessellate

from ident3d.scenes import load_preset, scene_params

RES = 48
TINY = {"samples": 4, "adaptive_sampling": False, "denoise": False, "max_bounces": 0}


def test_teapot_patches_and_tessellation() -> None:
    ctrl = load_patches()
    assert ctrl.shape == (32, 4, 4, 3)
    v, f = tessellate(10)
    assert len(v) == 3241  # the original asset had 3,242 vertices
    assert 3100 < len(f) <= 3200
    ext = v.max(0) - v.min(0)
    np.testing.assert_allclose(ext, [6.434, 4.0, 3.15], atol=1e-3)
    # welded: every edge of the closed body is shared by two faces (except the lid rim and the
    # spout's open end, which are open in Newell's data)
    edges: dict[tuple[int, int], int] = {}
    for face in f:
        for a, b in zip(face, face[1:] + face[:1], strict=True):
            key = (min(a, b), max(a, b))
            edges[key] = edges.get(key, 0) + 1
    shared = sum(1 for c in edges.values() if c == 2)
    assert shared / len(edges) > 0.95


def _signed_volume(v: np.ndarray, faces: list[tuple[int, ...]]) -> float:
    """Volume enclosed by the faces, positive when they are wound with outward normals."""
    vol = 0.0
    for face in faces:
        p = v[list(face)]
        for k in range(1, len(p) - 1):
            vol += float(np.dot(p[0], np.cross(p[k], p[k + 1]))) / 6.0
    return vol


def test_teapot_faces_point_outward() -> None:
    # Newell's (u, v) order winds the faces inward; Cycles then shades the teapot as back
    # faces (its Fresnel inverts the IOR: glossy-black rims, 30 dB against the original)
    v, f = tessellate(10)
    assert _signed_volume(v, f) > 20.0  # the body alone holds about 26 cubic units


def test_placed_teapot_is_the_original_asset():
    # the original's ShapeTeapot.blend x1.5: bounding box 4.442117 x 4.442117 x 2.998891
    # (measured with bpy), origin 1.360 above the base, spout along (+x, -y); S is its largest side
    p = load_preset("3dident")
    pts, faces = tessellate(p.data["teapot"]["segments"])
    v = place(pts, p.data["teapot"])
    assert len(v) == 3241 and len(faces) == 3200
    np.testing.assert_allclose(np.ptp(v, axis=0), [4.4421165, 4.4421165, 2.998891], atol=1e-4)
    assert np.ptp(v, axis=0).max() == pytest.approx(p.object_size, abs=1e-4)
    assert v[:, 2].min() == pytest.approx(-1.36004, abs=1e-4)  # base 1.360 below the pivot
    assert v[:, 2].max() == pytest.approx(1.63885, abs=1e-4)
    # the spout tip (the point farthest from the body axis) points along (+x, -y)
    tip = v[np.argmax(np.hypot(v[:, 0], v[:, 1]))]
    assert tip[0] > 2.0 and tip[1] < -2.0
    # the original's vertices are 0.6346863 * Rz(-45) * (p - (0, 0, 1.42857)), times 1.5
    np.testing.assert_allclose(v, 1.5 * place(pts, {**p.data["teapot"], "scale": 0.6346863}))


@pytest.fixture(scope="module")
def renderer() -> Any:
    pytest.importorskip("bpy")
    from ident3d.blender.scene import SceneRenderer

    preset = load_preset("3dident")
    r = SceneRenderer(preset.data, TINY, RES, objects=("teapot", "cube"), threads=2)
    yield r
    r.close()


def _frame(**over: float) -> dict[str, np.ndarray]:
    """Scene latents at the centre (hues chosen for clear colours), with overrides by name."""
    names = [
        "pos_x", "pos_y", "pos_z", "rot_alpha", "rot_beta", "rot_gamma", "spot_theta",
        "hue_object", "hue_spot", "hue_background",
    ]  # fmt: skip
    z = np.zeros(10)
    z[7] = 0.0  # red object
    z[8] = 2 * math.pi * 0.5  # cyan-ish spot (clean hue on the circle)
    z[9] = 2 * math.pi * 0.66  # blue ground
    for k, v in over.items():
        z[names.index(k)] = v
    p = scene_params(load_preset("3dident"), z[None], "clean")
    return {k: v[0] for k, v in p.items()}


def _render(r: Any, cls: int = 0, **over: float) -> np.ndarray:
    return r.render(_frame(**over), seed=1, object_class=cls).astype(np.float64)


def _mask(r: Any, cls: int = 0, **over: float) -> np.ndarray:
    """Object pixels: where the image changes when only the object's colour changes."""
    a = _render(r, cls, hue_object=0.0, **{k: v for k, v in over.items() if k != "hue_object"})
    b = _render(r, cls, hue_object=2 * math.pi / 3, **over)
    return np.abs(a - b).sum(-1) > 60


def _centroid(mask: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(mask)
    assert len(rows) > 5, "object not visible"
    return np.array([rows.mean(), cols.mean()])


@pytest.mark.bpy
def test_render_shape_and_determinism(renderer: Any) -> None:
    a = renderer.render(_frame(), seed=5)
    b = renderer.render(_frame(), seed=5)
    c = renderer.render(_frame(), seed=6)
    assert a.shape == (RES, RES, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)  # the Cycles seed changes the noise
    assert renderer.timings["handoff"] > 0


@pytest.mark.bpy
@pytest.mark.parametrize(
    ("factor", "axis", "sign"),
    [("pos_x", 0, +1), ("pos_y", 1, +1), ("pos_z", 0, -1)],
)
def test_position_moves_the_object_the_right_way(
    renderer: Any, factor: str, axis: int, sign: int
) -> None:
    """Camera at (8, 0, 8) looking at the origin: +x comes towards the camera (lower in the
    image), +y goes right, +z goes up."""
    lo = _centroid(_mask(renderer, **{factor: -2.0}))
    hi = _centroid(_mask(renderer, **{factor: 2.0}))
    assert sign * (hi[axis] - lo[axis]) > 2.0


@pytest.mark.bpy
def test_object_hue_changes_object_pixels_not_ground(renderer: Any) -> None:
    a = _render(renderer, hue_object=0.0)
    b = _render(renderer, hue_object=2 * math.pi / 3)
    diff = np.abs(a - b).sum(-1)
    obj = diff > 60
    assert obj.sum() > 20
    # far from the object (dilated mask), the ground is untouched
    from scipy.ndimage import binary_dilation

    far = ~binary_dilation(obj, iterations=2)
    assert diff[far].max() <= 3
    # red object: R dominates, green object: G dominates
    assert a[obj][:, 0].mean() > a[obj][:, 1].mean() + 30
    assert b[obj][:, 1].mean() > b[obj][:, 0].mean() + 30


@pytest.mark.bpy
def test_background_hue_changes_the_ground(renderer: Any) -> None:
    obj = _mask(renderer)
    a = _render(renderer, hue_background=2 * math.pi * 0.66)  # blue
    b = _render(renderer, hue_background=2 * math.pi * 0.33)  # green
    ground = ~obj
    da = np.abs(a - b).sum(-1)
    assert da[ground].mean() > 30
    assert a[ground][:, 2].mean() > a[ground][:, 1].mean()
    assert b[ground][:, 1].mean() > b[ground][:, 2].mean()
    # object pixels (inner part) change much less than the ground
    from scipy.ndimage import binary_erosion

    inner = binary_erosion(obj, iterations=1)
    if inner.sum() > 3:
        assert da[inner].mean() < 0.5 * da[ground].mean()


@pytest.mark.bpy
def test_spotlight_angle_moves_the_lit_spot(renderer: Any) -> None:
    """The spot is beside the object's shadow on the side away from the lamp: lamp at +y
    (theta = 0) lights the ground towards -y (left in the image), lamp at -y the right."""
    a = _render(renderer, spot_theta=0.0).sum(-1)
    b = _render(renderer, spot_theta=math.pi).sum(-1)
    cols = np.arange(RES)[None, :].repeat(RES, 0)
    brighter_a = a > b + 30
    brighter_b = b > a + 30
    assert brighter_a.sum() > 20 and brighter_b.sum() > 20
    assert cols[brighter_a].mean() < cols[brighter_b].mean() - 5


@pytest.mark.bpy
def test_spotlight_hue_tints_the_lit_spot(renderer: Any) -> None:
    a = _render(renderer, hue_spot=0.0)  # red light
    b = _render(renderer, hue_spot=2 * math.pi / 3)  # green light
    diff = np.abs(a - b).sum(-1)
    lit = diff > 30
    assert lit.sum() > 30
    assert (a[lit][:, 0] - a[lit][:, 1]).mean() > (b[lit][:, 0] - b[lit][:, 1]).mean() + 20


@pytest.mark.bpy
@pytest.mark.parametrize("factor", ["rot_alpha", "rot_beta", "rot_gamma"])
def test_rotation_changes_the_silhouette(renderer: Any, factor: str) -> None:
    m0 = _mask(renderer, **{factor: 0.0})
    m1 = _mask(renderer, **{factor: math.pi / 2})
    iou = (m0 & m1).sum() / (m0 | m1).sum()
    assert iou < 0.85
    assert np.abs(_centroid(m0) - _centroid(m1)).max() < 8  # it turned, it did not move


@pytest.mark.bpy
def test_object_class_switches_the_mesh(renderer: Any) -> None:
    teapot = _mask(renderer, cls=0)
    cube = _mask(renderer, cls=1)
    iou = (teapot & cube).sum() / (teapot | cube).sum()
    assert iou < 0.8
    assert renderer.active_class == 1
    _render(renderer, cls=0)


@pytest.mark.bpy
def test_object_sizes_and_no_per_frame_datablocks(renderer: Any) -> None:
    from ident3d.blender.scene import SceneRenderer

    size = load_preset("3dident").object_size
    for obj in renderer.objects:
        assert max(obj.dimensions) == pytest.approx(size, rel=1e-5)
    teapot = renderer.objects[0]
    assert len(teapot.data.vertices) == 3241
    before = SceneRenderer.datablock_counts()
    for i in range(5):
        renderer.render(_frame(pos_x=i * 0.3), seed=i, object_class=i % 2)
    assert SceneRenderer.datablock_counts() == before


@pytest.mark.bpy
def test_scene_applies_the_measured_facts(renderer: Any) -> None:
    """The built scene holds the preset's numbers (each measured in the original's assets)."""
    import bpy

    d = load_preset("3dident").data
    scene = renderer.scene
    cam = scene.camera.data
    assert (cam.clip_start, cam.clip_end) == pytest.approx((0.1, 100.0))
    assert (cam.lens, cam.sensor_width, cam.sensor_fit) == (35.0, 50.0, "AUTO")
    lights = {o.data.type: o.data for o in bpy.data.objects if o.type == "LIGHT"}
    assert lights["SUN"].angle == pytest.approx(0.199337, abs=1e-6)
    assert lights["SUN"].energy == pytest.approx(0.5)
    assert (lights["AREA"].shape, lights["AREA"].size) == ("SQUARE", pytest.approx(1.0))
    assert lights["AREA"].energy == pytest.approx(39.2699, abs=1e-3)
    assert scene.render.dither_intensity == 0.0
    assert scene.cycles.filter_width == pytest.approx(1.5)
    # the teapot is placed as the original's asset, not re-centred or rescaled
    teapot = renderer.objects[0].data
    co = np.empty(len(teapot.vertices) * 3)
    teapot.vertices.foreach_get("co", co)
    want = place(tessellate(d["teapot"]["segments"])[0], d["teapot"])
    np.testing.assert_allclose(co.reshape(-1, 3), want, atol=1e-5)
    assert all(p.use_smooth for p in teapot.polygons)
    assert renderer.ground.location.z == pytest.approx(-4.442117, abs=1e-5)


@pytest.mark.bpy
def test_material_is_the_measured_rubber_node_group(renderer: Any) -> None:
    """Diffuse (roughness 0) and sheen (Ashikhmin 0.6) mixed by Fresnel(1.4); that mixed with
    a Beckmann glossy (0.8, roughness sqrt(0.35)) by Fresnel(1.2); the output is that mix."""
    for mat in (renderer.object_material, renderer.ground_material):
        nodes = mat.node_tree.nodes
        out = next(n for n in nodes if n.bl_idname == "ShaderNodeOutputMaterial")
        top = out.inputs["Surface"].links[0].from_node

        def src(node: Any, i: int) -> Any:
            return node.inputs[i].links[0].from_node

        assert top.bl_idname == "ShaderNodeMixShader"
        fres_top, mix, glossy = src(top, 0), src(top, 1), src(top, 2)
        assert fres_top.bl_idname == "ShaderNodeFresnel"
        assert fres_top.inputs["IOR"].default_value == pytest.approx(1.2)
        assert glossy.bl_idname == "ShaderNodeBsdfAnisotropic"  # Blender 5's Glossy BSDF
        assert glossy.distribution == "BECKMANN"
        assert tuple(glossy.inputs["Color"].default_value)[:3] == pytest.approx((0.8,) * 3)
        assert glossy.inputs["Roughness"].default_value == pytest.approx(math.sqrt(0.35), 1e-5)
        assert glossy.inputs["Anisotropy"].default_value == 0.0
        assert mix.bl_idname == "ShaderNodeMixShader"
        fres, diffuse, sheen = src(mix, 0), src(mix, 1), src(mix, 2)
        assert fres.bl_idname == "ShaderNodeFresnel"
        assert fres.inputs["IOR"].default_value == pytest.approx(1.4)
        assert diffuse.bl_idname == "ShaderNodeBsdfDiffuse"
        assert diffuse.inputs["Roughness"].default_value == 0.0
        assert sheen.bl_idname == "ShaderNodeBsdfSheen" and sheen.distribution == "ASHIKHMIN"
        assert sheen.inputs["Roughness"].default_value == pytest.approx(0.6)
        # the hue colour feeds diffuse and sheen, nothing else
        colour = renderer._color_socket(mat)
        assert {ln.to_node.name for ln in colour.links} == {diffuse.name, sheen.name}


@pytest.mark.bpy
def test_out_of_gamut_colours_are_clamped_like_blender_2_91(renderer: Any) -> None:
    """colorsys gives negative components for negative hues; Blender's colour sockets and
    lamp colours hold [0, inf] (so did 2.91's), so they render as the clamped colour."""
    import colorsys

    f = _frame()
    raw = colorsys.hsv_to_rgb(-0.1, 1.0, 1.0)
    assert min(raw) < 0
    f_raw = {**f, "object_color": np.array(raw)}
    f_clip = {**f, "object_color": np.clip(np.array(raw), 0, None)}
    assert np.array_equal(renderer.render(f_raw, 3), renderer.render(f_clip, 3))


@pytest.mark.bpy
def test_user_mesh_is_normalised_to_the_object_size(tmp_path: Path) -> None:
    pytest.importorskip("bpy")
    from ident3d.blender.scene import SceneError, SceneRenderer

    obj = tmp_path / "tetra.obj"
    obj.write_text("v 0 0 0\nv 10 0 0\nv 0 20 0\nv 0 0 5\nf 1 3 2\nf 1 2 4\nf 1 4 3\nf 2 3 4\n")
    ply = tmp_path / "tetra.ply"
    ply.write_text(
        "ply\nformat ascii 1.0\nelement vertex 4\nproperty float x\nproperty float y\n"
        "property float z\nelement face 4\nproperty list uchar int vertex_indices\n"
        "end_header\n0 0 0\n10 0 0\n0 20 0\n0 0 5\n3 0 2 1\n3 0 1 3\n3 0 3 2\n3 1 2 3\n"
    )
    stl = tmp_path / "tri.stl"
    stl.write_text(
        "solid t\nfacet normal 0 0 1\nouter loop\nvertex 0 0 0\nvertex 2 0 0\n"
        "vertex 0 1 0\nendloop\nendfacet\nendsolid t\n"
    )
    import addon_utils
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.mesh.primitive_cube_add(size=3.0)
    addon_utils.enable("io_scene_gltf2", default_set=True)
    glb = tmp_path / "cube.glb"
    bpy.ops.export_scene.gltf(filepath=str(glb))
    preset = load_preset("3dident")
    objects = (str(obj), "suzanne", str(ply), str(stl), str(glb))
    r = SceneRenderer(preset.data, TINY, 32, objects=objects, threads=1)
    try:
        size = preset.object_size
        for o in r.objects:
            assert max(o.dimensions) == pytest.approx(size, rel=1e-5)
        for tetra in (r.objects[0], r.objects[2]):
            dims = sorted(tetra.dimensions)
            assert dims[0] == pytest.approx(size / 4, rel=1e-4)
        assert len(r.objects[3].data.polygons) == 1
        assert len(r.objects[4].data.vertices) >= 8
        counts = SceneRenderer.datablock_counts()
        assert counts["meshes"] == 6 and counts["materials"] == 2  # imports left nothing
        assert r.render(_frame(), 0, object_class=0).shape == (32, 32, 3)
        assert r.render(_frame(), 0, object_class=4).shape == (32, 32, 3)
    finally:
        r.close()
    bad = tmp_path / "bad.ply"
    bad.write_text("this is not a ply file\n")
    with pytest.raises(SceneError):
        SceneRenderer(preset.data, TINY, 32, objects=(str(bad),), threads=1)


# ------------------------------------------------------------------------------ devices


class _Dev:
    def __init__(self, name: str, type_: str) -> None:
        self.name, self.type, self.use = name, type_, True


class _Prefs:
    """A stand-in for Cycles' add-on preferences."""

    def __init__(self, devices: dict[str, list[str]], unsupported: tuple[str, ...] = ()) -> None:
        self._devices = devices
        self._unsupported = unsupported
        self._type = "NONE"
        self.devices: list[_Dev] = []
        self.calls: list[str] = []

    @property
    def compute_device_type(self) -> str:
        return self._type

    @compute_device_type.setter
    def compute_device_type(self, value: str) -> None:
        if value in self._unsupported:
            raise TypeError(f"enum {value!r} not found")
        self._type = value

    def get_devices(self) -> None:
        self.calls.append(self._type)
        self.devices = [_Dev("CPU", "CPU")] + [
            _Dev(n, self._type) for n in self._devices.get(self._type, [])
        ]


def test_select_gpu_prefers_optix_then_cuda() -> None:
    from ident3d.blender.devices import select_gpu

    p = _Prefs({"OPTIX": ["H100"], "CUDA": ["H100"]})
    assert select_gpu(p) == ("OPTIX", ["H100"])
    assert p.compute_device_type == "OPTIX"
    assert [d.use for d in p.devices] == [False, True]  # CPU off, GPU on

    p = _Prefs({"CUDA": ["A100", "A100"]}, unsupported=("OPTIX",))
    assert select_gpu(p) == ("CUDA", ["A100", "A100"])
    assert p.calls == ["CUDA"]
    assert [d.use for d in p.devices] == [False, True, True]


def test_select_gpu_fails_loudly_without_a_device() -> None:
    from ident3d.blender.devices import NoGPUError, select_gpu

    with pytest.raises(NoGPUError, match="no GPU device"):
        select_gpu(_Prefs({}))


@pytest.mark.bpy
def test_real_blender_on_a_cpu_machine_refuses_gpu(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With bpy and no GPU, --gpu fails with one line instead of rendering on the CPU."""
    pytest.importorskip("bpy")
    from ident3d.blender.devices import NoGPUError, cycles_preferences, select_gpu

    try:
        import torch

        if torch.cuda.is_available():
            pytest.skip("a CUDA device is present")
    except ImportError:
        pass
    with pytest.raises(NoGPUError):
        select_gpu(cycles_preferences())
    from ident3d.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["render", "--out", str(tmp_path / "d"), "--n", "1", "--gpu", "--quality", "fast",
              "--resolution", "16", "--workers", "1", "--quiet"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2
    assert err[-1].startswith("error: --gpu was given but Cycles found no GPU device")
    assert not (tmp_path / "d").exists()  # the failed run left nothing behind


@pytest.mark.gpu
@pytest.mark.bpy
def test_gpu_render_matches_cpu_closely() -> None:
    from ident3d.blender.scene import SceneRenderer

    preset = load_preset("3dident")
    q = preset.quality("fast")
    cpu = SceneRenderer(preset.data, q, 64, threads=2).render(_frame(), 1)
    g = SceneRenderer(preset.data, q, 64, gpu=True)
    assert g.scene.cycles.device == "GPU" and g.gpu_backend in ("OPTIX", "CUDA")
    gpu = g.render(_frame(), 1)
    mse = np.mean((cpu.astype(float) - gpu.astype(float)) ** 2)
    assert 10 * math.log10(255**2 / max(mse, 1e-9)) > 30


# ------------------------------------------------------------------------------ .blend meshes


def _save_blend(path: Path, with_mesh: bool) -> None:
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    if with_mesh:  # a mesh with a parent and a scale: the world matrix must apply
        bpy.ops.mesh.primitive_cube_add(size=2.0)
        cube = bpy.context.active_object
        cube.scale = (1.0, 3.0, 0.5)
        bpy.ops.object.empty_add(location=(5.0, 0.0, 0.0))
        cube.parent = bpy.context.active_object
    bpy.ops.object.camera_add()
    bpy.ops.wm.save_as_mainfile(filepath=str(path), copy=True)


@pytest.mark.bpy
def test_blend_file_meshes_are_imported_and_normalised(tmp_path: Path) -> None:
    """``--object X.blend`` (the asset packs' ShapeHare.blend ...): its mesh objects are joined,
    world transforms applied, centred and scaled to S like any user mesh; nothing of the file
    stays in the scene; a .blend without a mesh is one clear SceneError."""
    pytest.importorskip("bpy")
    from ident3d.blender.scene import SceneError, SceneRenderer

    good, empty = tmp_path / "ShapeBox.blend", tmp_path / "NoMesh.blend"
    _save_blend(good, True)
    _save_blend(empty, False)
    preset = load_preset("3dident")
    r = SceneRenderer(preset.data, TINY, 32, objects=(str(good), "teapot"), threads=1)
    try:
        size = preset.object_size
        dims = sorted(r.objects[0].dimensions)
        assert dims[2] == pytest.approx(size, rel=1e-5)
        assert dims[0] == pytest.approx(size / 6, rel=1e-4)  # 2 x 6 x 1 box
        assert dims[1] == pytest.approx(size / 3, rel=1e-4)
        counts = SceneRenderer.datablock_counts()
        assert counts["meshes"] == 3 and counts["objects"] == 2 + 8  # ground + 2 classes
        assert r.render(_frame(), 0, object_class=0).shape == (32, 32, 3)
    finally:
        r.close()
    with pytest.raises(SceneError, match="no mesh object"):
        SceneRenderer(preset.data, TINY, 32, objects=(str(empty),), threads=1)


@pytest.mark.bpy
def test_views_render_their_own_material() -> None:
    """3didentbox: view 0 shows the MyMetal material (two anisotropic GGX glossy BSDFs with
    the measured numbers), view 1 the rubber one; the same frame differs only in the object."""
    pytest.importorskip("bpy")
    from ident3d.blender.scene import SceneRenderer

    preset = load_preset("3didentbox")
    r = SceneRenderer(preset.data, TINY, RES, objects=("teapot",), threads=2)
    try:
        assert len(r.object_materials) == 2 and r.view_material == [0, 1]
        metal = r.object_materials[0].node_tree.nodes
        aniso = [n for n in metal if n.bl_idname == "ShaderNodeBsdfAnisotropic"]
        assert sorted(round(n.inputs["Roughness"].default_value, 5) for n in aniso) == [
            0.1,
            0.44721,
        ]
        assert all(n.distribution == "GGX" for n in aniso)
        mix = next(n for n in metal if n.bl_idname == "ShaderNodeMixShader")
        assert mix.inputs[0].default_value == pytest.approx(0.6)
        rubber = {n.bl_idname for n in r.object_materials[1].node_tree.nodes}
        assert "ShaderNodeBsdfSheen" in rubber
        frame = _frame()
        a = r.render({**frame, "view": 0}, seed=1).astype(np.float64)
        b = r.render({**frame, "view": 1}, seed=1).astype(np.float64)
        a2 = r.render({**frame, "view": 0}, seed=1).astype(np.float64)
        assert np.array_equal(a, a2)
        diff = np.abs(a - b).sum(-1)
        assert diff.max() > 60  # the object looks different
        corner = diff[:4, :4]  # the far ground (top-left) is the same rubber in both views
        assert corner.max() <= 6
    finally:
        r.close()
