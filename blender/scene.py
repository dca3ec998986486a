"""Build the 3DIdent scene in Blender from a preset and render frames to numpy.

This is the only module of ident3d that drives Blender. It takes plain data (the preset's
validated dict, a quality dict, per-frame scene parameters as numbers) so it could run inside a
Blender binary as well as with ``bpy`` as a Python module; it imports only bpy, numpy and the
standard library.

:class:`SceneRenderer` builds the scene once (camera with a track-to constraint, sun, square
area lamp, a spotlight that tracks the object, ground plane, the CLEVR-like "rubber" material,
colour management, every Cycles setting written explicitly) and then, per frame, only moves
the object and the spotlight, sets three colours, the Cycles seed and renders. Nothing is
created per frame, so memory stays flat: the frame leaves Blender as an uncompressed BMP in
``/dev/shm`` (``Image.save_render``), which is parsed with numpy (no image datablock, no PNG).
Background-mode Blender keeps the "Render Result" pixels out of Python's reach, so a file
round trip is unavoidable; this one costs a few milliseconds (see docs/render.md).

Colours are assigned exactly as handed over (``scene_params`` of :mod:`ident3d.scenes`);
Blender's colour properties clamp negative components to 0 on assignment (the socket and light
colour ranges are ``[0, inf]`` since Blender 2.71, so the original 2.91 generator clamped its
out-of-gamut colorsys values the same way).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import bpy
import numpy as np

from .devices import cycles_preferences, select_gpu
from .teapot import place, tessellate

PRIMITIVES: dict[str, str] = {
    "suzanne": "primitive_monkey_add",
    "torus": "primitive_torus_add",
    "cube": "primitive_cube_add",
    "cylinder": "primitive_cylinder_add",
    "sphere": "primitive_uv_sphere_add",
    "cone": "primitive_cone_add",
}
BUILTIN_SHAPES: tuple[str, ...] = ("teapot", *PRIMITIVES)
#: Teapot tessellation when a preset has no ``[teapot]`` section.
TEAPOT_SEGMENTS = 10
MESH_SUFFIXES: tuple[str, ...] = (".obj", ".ply", ".stl", ".glb", ".gltf", ".blend")
FRAME_KEYS: tuple[str, ...] = (
    "object_location",
    "object_rotation",
    "spot_location",
    "object_color",
    "spot_color",
    "ground_color",
)


class SceneError(ValueError):
    """A problem with the user's input found while building the scene (e.g. an unreadable
    mesh). ``ident3d.render`` turns it into a one-line usage error."""


def read_bmp(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an uncompressed 24/32-bit BMP into an ``(H, W, 3)`` uint8 array (top row first)."""
    data = np.fromfile(path, dtype=np.uint8)
    if data[:2].tobytes() != b"BM":
        raise RuntimeError(f"{path} is not a BMP file")
    offset = int(data[10:14].view("<u4")[0])
    width = int(data[18:22].view("<i4")[0])
    height = int(data[22:26].view("<i4")[0])
    bpp = int(data[28:30].view("<u2")[0])
    compression = int(data[30:34].view("<u4")[0])
    if bpp not in (24, 32) or compression not in (0, 3):
        raise RuntimeError(f"{path}: unsupported BMP ({bpp} bits, compression {compression})")
    channels = bpp // 8
    stride = (width * channels + 3) & ~3
    rows = abs(height)
    pix = data[offset : offset + stride * rows].reshape(rows, stride)[:, : width * channels]
    pix = pix.reshape(rows, width, channels)[:, :, 2::-1]  # BGR(A) -> RGB
    if height > 0:  # bottom-up rows
        pix = pix[::-1]
    return np.ascontiguousarray(pix)


def _view_materials(preset: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The object material of view 0 and view 1: ``[views.N.material]`` or ``[material]``."""
    views = preset.get("views") or {}
    return [dict((views.get(str(v)) or {}).get("material", preset["material"])) for v in (0, 1)]


def _track_to(obj: Any, target: Any, track: str, up: str) -> None:
    con = obj.constraints.new("TRACK_TO")
    con.target = target
    con.track_axis = track
    con.up_axis = up


def _new_object(name: str, data: Any) -> Any:
    obj = bpy.data.objects.new(name, data)
    bpy.context.scene.collection.objects.link(obj)
    return obj


def _mesh_arrays(objs: Sequence[Any]) -> tuple[np.ndarray, list[list[int]]]:
    """World-space vertices and polygons of mesh objects, concatenated."""
    verts_all, faces_all, base = [], [], 0
    for obj in objs:
        mesh = obj.data
        n = len(mesh.vertices)
        co = np.empty(n * 3, np.float64)
        mesh.vertices.foreach_get("co", co)
        co = co.reshape(n, 3)
        m = np.array(obj.matrix_world, dtype=np.float64)
        co = co @ m[:3, :3].T + m[:3, 3]
        verts_all.append(co)
        for poly in mesh.polygons:
            faces_all.append([base + v for v in poly.vertices])
        base += n
    if not verts_all:
        return np.zeros((0, 3)), []
    return np.concatenate(verts_all), faces_all


class SceneRenderer:
    """One 3DIdent scene in this process; renders frames to ``(H, W, 3)`` uint8 arrays.

    Parameters
    ----------
    preset:
        The preset's validated dict (``Preset.data`` of :mod:`ident3d.scenes`).
    quality:
        A quality dict (``Preset.quality(name)``): samples, adaptive sampling, denoiser ...
    resolution:
        Square image side in pixels.
    objects:
        Object classes: built-in shape names (``teapot``, ``suzanne``, ``torus``, ``cube``,
        ``cylinder``, ``sphere``, ``cone``) or mesh files. Each is centred on its bounding box
        and scaled so its largest side is the preset's object size S, except the teapot when
        the preset has a ``[teapot]`` section: then it is placed exactly as the original's
        asset (:func:`ident3d.blender.teapot.place`).
    threads:
        Cycles CPU threads (0: all cores).
    gpu:
        Render on a GPU (OptiX, else CUDA); :class:`NoGPUError` if none.
    """

    def __init__(
        self,
        preset: Mapping[str, Any],
        quality: Mapping[str, Any],
        resolution: int,
        objects: Sequence[str] = ("teapot",),
        threads: int = 0,
        gpu: bool = False,
        handoff_dir: str | None = None,
        gpu_choose: Any = None,
    ) -> None:
        self.preset = preset
        self.quality = dict(quality)
        self.resolution = int(resolution)
        self.gpu = bool(gpu)
        self.gpu_choose = gpu_choose  # which of the devices (ident3d.render.gpus); None: all
        self.gpu_backend: str | None = None
        self.gpu_devices: list[str] = []
        self.timings: dict[str, float] = {"apply": 0.0, "render": 0.0, "handoff": 0.0}
        self.frames = 0
        shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        # Named by PID, so a later worker can remove the folder of one that was killed
        # (ident3d.render.workers.clean_stale_frame_dirs); removed at close or at exit.
        self._tmpdir = tempfile.mkdtemp(
            prefix=f"ident3d-frame-{os.getpid()}-", dir=handoff_dir or shm
        )
        self._finalizer = weakref.finalize(self, shutil.rmtree, self._tmpdir, True)
        self._frame_path = str(Path(self._tmpdir) / "frame.bmp")

        bpy.ops.wm.read_factory_settings(use_empty=True)
        self.scene = bpy.context.scene
        self._setup_render(threads)
        self._setup_world()
        self._setup_camera()
        self._setup_lights()
        # one object material per distinct material of the views ([views.N.material])
        specs = _view_materials(preset)
        self.object_materials: list[Any] = []
        self.view_material: list[int] = []
        for v, spec in enumerate(specs):
            if spec in specs[:v]:
                self.view_material.append(self.view_material[specs.index(spec)])
                continue
            self.view_material.append(len(self.object_materials))
            self.object_materials.append(self._material(spec, f"object{v}"))
        self.object_material = self.object_materials[0]
        self.ground_material = self._material(preset["material"], "ground")
        self._setup_ground()
        self.objects = [self._build_object(spec, i) for i, spec in enumerate(objects)]
        self.active_class = -1
        self._show_class(0)
        if self.gpu:
            self._enable_gpu()

    # ------------------------------------------------------------------ scene building
    def _setup_render(self, threads: int) -> None:
        r = self.preset["render"]
        scene = self.scene
        scene.render.engine = r["engine"]
        scene.render.resolution_x = self.resolution
        scene.render.resolution_y = self.resolution
        scene.render.resolution_percentage = 100
        scene.render.pixel_aspect_x = 1.0
        scene.render.pixel_aspect_y = 1.0
        scene.render.film_transparent = bool(r["film_transparent"])
        if "dither_intensity" in r:  # else Blender's default (1.0)
            scene.render.dither_intensity = float(r["dither_intensity"])
        scene.render.use_persistent_data = bool(r.get("use_persistent_data", True))
        scene.render.use_motion_blur = False
        if threads > 0:
            scene.render.threads_mode = "FIXED"
            scene.render.threads = int(threads)
        else:
            scene.render.threads_mode = "AUTO"
        img = scene.render.image_settings
        img.file_format = "BMP"
        img.color_mode = "RGB"
        vs = scene.view_settings
        scene.display_settings.display_device = r["display_device"]
        vs.view_transform = r["view_transform"]
        vs.look = r["look"]
        vs.exposure = 0.0
        vs.gamma = 1.0
        vs.use_curve_mapping = False
        c = scene.cycles
        c.device = "CPU"
        c.pixel_filter_type = r["pixel_filter"]
        c.filter_width = float(r["filter_width"])
        c.transparent_max_bounces = int(r["transparent_max_bounces"])
        c.blur_glossy = float(r["blur_glossy"])
        c.use_animated_seed = False
        c.seed = 0
        c.use_auto_tile = False
        c.time_limit = 0.0
        c.use_guiding = False
        c.use_layer_samples = "IGNORE"
        self.apply_quality(self.quality)

    def apply_quality(self, q: Mapping[str, Any]) -> None:
        """Write a quality preset's Cycles settings (every one explicitly).

        Called once when the scene is built. Switching a built scene to other settings and
        back renders valid frames, but not with the noise of a fresh renderer (Cycles keeps
        some sampling state), so datasets and benchmarks use one renderer per quality."""
        c = self.scene.cycles
        c.samples = int(q["samples"])
        c.preview_samples = int(q["samples"])
        c.use_adaptive_sampling = bool(q["adaptive_sampling"])
        c.adaptive_threshold = float(q.get("adaptive_threshold", 0.01))
        c.adaptive_min_samples = int(q.get("adaptive_min_samples", 0))
        c.max_bounces = int(q["max_bounces"])
        # per-type limits default to the overall one (max_bounces caps them anyway)
        for key in ("diffuse_bounces", "glossy_bounces", "transmission_bounces"):
            setattr(c, key, int(q.get(key, q["max_bounces"])))
        c.volume_bounces = 0  # the scene has no volumes
        c.caustics_reflective = c.caustics_refractive = bool(q.get("caustics", True))
        # 0 = no clamping (Blender's meaning)
        c.sample_clamp_direct = float(q.get("sample_clamp_direct", 0.0))
        c.sample_clamp_indirect = float(q.get("sample_clamp_indirect", 0.0))
        c.use_light_tree = bool(q.get("use_light_tree", True))
        # Blender 5's default for a new scene; BLUE_NOISE spreads the error of few samples as
        # blue noise, which the denoiser removes better
        c.sampling_pattern = str(q.get("sampling_pattern", "TABULATED_SOBOL"))
        if "light_sampling_threshold" in q:
            c.light_sampling_threshold = float(q["light_sampling_threshold"])
        c.use_denoising = bool(q["denoise"])
        c.denoiser = str(q.get("denoiser", "OPENIMAGEDENOISE"))
        c.denoising_prefilter = str(q.get("denoising_prefilter", "ACCURATE"))
        c.denoising_quality = str(q.get("denoising_quality", "HIGH"))
        c.denoising_input_passes = str(q.get("denoising_input_passes", "RGB_ALBEDO_NORMAL"))
        c.denoising_use_gpu = self.gpu
        # the view layer's own switch must agree, or Cycles skips the denoiser
        for layer in self.scene.view_layers:
            layer.cycles.use_denoising = bool(q["denoise"])
        self.quality = dict(q)

    def _setup_world(self) -> None:
        w = self.preset["world"]
        world = bpy.data.worlds.new("World")
        self.scene.world = world
        world.color = tuple(w["color"])
        nt = world.node_tree
        bg = nt.nodes.get("Background") or nt.nodes.new("ShaderNodeBackground")
        bg.inputs["Color"].default_value = (*w["color"], 1.0)
        bg.inputs["Strength"].default_value = float(w["strength"])
        out = nt.nodes.get("World Output") or nt.nodes.new("ShaderNodeOutputWorld")
        if not out.inputs["Surface"].is_linked:
            nt.links.new(bg.outputs["Background"], out.inputs["Surface"])

    def _empty(self, name: str, location: Sequence[float]) -> Any:
        e = _new_object(name, None)
        e.location = tuple(location)
        return e

    def _setup_camera(self) -> None:
        cfg = self.preset["camera"]
        cam = bpy.data.cameras.new("Camera")
        cam.type = "PERSP"
        cam.lens_unit = "MILLIMETERS"
        cam.lens = float(cfg["lens_mm"])
        cam.sensor_width = float(cfg["sensor_width_mm"])
        cam.sensor_fit = cfg["sensor_fit"]
        cam.clip_start = float(cfg["clip_start"])
        cam.clip_end = float(cfg["clip_end"])
        cam.shift_x = cam.shift_y = 0.0
        obj = _new_object("Camera", cam)
        obj.location = tuple(cfg["location"])
        _track_to(obj, self._empty("CameraTarget", cfg["target"]), "TRACK_NEGATIVE_Z", "UP_Y")
        self.scene.camera = obj

    def _setup_lights(self) -> None:
        p = self.preset
        sun = bpy.data.lights.new("Sun", "SUN")
        sun.energy = float(p["sun"]["strength"])
        sun.angle = float(p["sun"]["angle_rad"])
        sun_obj = _new_object("Sun", sun)
        sun_obj.rotation_euler = tuple(math.radians(a) for a in p["sun"]["rotation_deg"])

        a = p["area_light"]
        area = bpy.data.lights.new("Area", "AREA")
        area.shape = a["shape"]
        area.size = float(a["size"])
        area.energy = float(a["power_w"])
        area_obj = _new_object("Area", area)
        area_obj.location = tuple(a["location"])
        _track_to(area_obj, self._empty("AreaTarget", a["target"]), "TRACK_NEGATIVE_Z", "UP_Y")

        s = p["spotlight"]
        spot = bpy.data.lights.new("Spot", "SPOT")
        spot.energy = float(s["power_w"])
        spot.spot_size = math.radians(float(s["spot_size_deg"]))
        spot.spot_blend = float(s["spot_blend"])
        spot.shadow_soft_size = float(s["shadow_soft_size"])
        spot.color = tuple(s["base_color"])
        self.spot = spot
        self.spot_obj = _new_object("Spot", spot)
        # the spotlight aims at this empty, which follows the object every frame
        self.pivot = self._empty("ObjectPivot", (0.0, 0.0, 0.0))
        _track_to(self.spot_obj, self.pivot, s["track_axis"], s["up_axis"])
        area.normalize = True  # power_w is in Blender 4+/5 units (ellipse lamps normalised)
        for light in (sun, area, spot):
            light.use_shadow = True
        # Blender 4+ soft falloff keeps the pre-4.0 look of point-like lamps
        spot.use_soft_falloff = True

    def _material(self, spec: Mapping[str, Any], name: str) -> Any:
        if spec.get("type", "rubber") == "metal":
            return self._metal_material(spec, name)
        return self._rubber_material(name, spec)

    def _metal_material(self, m: Mapping[str, Any], name: str) -> Any:
        """The "MyMetal" node group of the original assets, flattened: the colour feeds two
        anisotropic glossy BSDFs (roughness ``roughness_1`` and ``roughness_2``), mixed by
        ``mix_factor`` (0: only the first)."""
        mat = bpy.data.materials.new(f"{m['name']}_{name}")
        nt = mat.node_tree
        nt.nodes.clear()
        rgb = nt.nodes.new("ShaderNodeRGB")
        rgb.outputs[0].default_value = (0.5, 0.5, 0.5, 1.0)
        mix = nt.nodes.new("ShaderNodeMixShader")
        mix.inputs[0].default_value = float(m["mix_factor"])
        for slot, key in ((1, "roughness_1"), (2, "roughness_2")):
            g = nt.nodes.new("ShaderNodeBsdfAnisotropic")
            g.distribution = m["glossy_distribution"]
            g.inputs["Roughness"].default_value = float(m[key])
            g.inputs["Anisotropy"].default_value = float(m["anisotropy"])
            g.inputs["Rotation"].default_value = float(m["anisotropy_rotation"])
            nt.links.new(rgb.outputs[0], g.inputs["Color"])
            nt.links.new(g.outputs[0], mix.inputs[slot])
        out = nt.nodes.new("ShaderNodeOutputMaterial")
        out.target = "ALL"
        nt.links.new(mix.outputs[0], out.inputs["Surface"])
        mat["color_node"] = rgb.name
        return mat

    def _rubber_material(self, name: str, spec: Mapping[str, Any] | None = None) -> Any:
        """The CLEVR "Rubber" node group, flattened: diffuse and sheen mixed by a Fresnel
        factor, that mixed with a glossy BSDF by a second Fresnel factor (``[material]``)."""
        m = spec if spec is not None else self.preset["material"]
        mat = bpy.data.materials.new(f"{m['name']}_{name}")
        nt = mat.node_tree
        nt.nodes.clear()
        rgb = nt.nodes.new("ShaderNodeRGB")
        rgb.outputs[0].default_value = (0.5, 0.5, 0.5, 1.0)
        diffuse = nt.nodes.new("ShaderNodeBsdfDiffuse")
        diffuse.inputs["Roughness"].default_value = float(m["diffuse_roughness"])
        sheen = nt.nodes.new("ShaderNodeBsdfSheen")
        # ASHIKHMIN is the velvet model of Blender <= 3.x's Velvet BSDF (sigma = roughness)
        sheen.distribution = m["sheen_distribution"]
        sheen.inputs["Roughness"].default_value = float(m["sheen_roughness"])
        if "sheen_weight" in m:
            sheen.inputs["Weight"].default_value = float(m["sheen_weight"])
        fresnel = nt.nodes.new("ShaderNodeFresnel")
        fresnel.inputs["IOR"].default_value = float(m["fresnel_ior"])
        mix = nt.nodes.new("ShaderNodeMixShader")
        glossy = nt.nodes.new("ShaderNodeBsdfGlossy")
        glossy.distribution = m["glossy_distribution"]
        glossy.inputs["Color"].default_value = (*m["glossy_color"], 1.0)
        glossy.inputs["Roughness"].default_value = float(m["glossy_roughness"])
        glossy_fresnel = nt.nodes.new("ShaderNodeFresnel")
        glossy_fresnel.inputs["IOR"].default_value = float(m["glossy_fresnel_ior"])
        top = nt.nodes.new("ShaderNodeMixShader")
        out = nt.nodes.new("ShaderNodeOutputMaterial")
        out.target = "ALL"
        links = nt.links
        links.new(rgb.outputs[0], diffuse.inputs["Color"])
        links.new(rgb.outputs[0], sheen.inputs["Color"])
        links.new(fresnel.outputs[0], mix.inputs[0])
        links.new(diffuse.outputs[0], mix.inputs[1])
        links.new(sheen.outputs[0], mix.inputs[2])
        links.new(glossy_fresnel.outputs[0], top.inputs[0])
        links.new(mix.outputs[0], top.inputs[1])
        links.new(glossy.outputs[0], top.inputs[2])
        links.new(top.outputs[0], out.inputs["Surface"])
        mat["color_node"] = rgb.name
        return mat

    @staticmethod
    def _color_socket(mat: Any) -> Any:
        return mat.node_tree.nodes[mat["color_node"]].outputs[0]

    def _setup_ground(self) -> None:
        g = self.preset["ground"]
        size = float(g["size"])
        h = size / 2.0
        mesh = bpy.data.meshes.new("Ground")
        mesh.from_pydata(
            [(-h, -h, 0.0), (h, -h, 0.0), (h, h, 0.0), (-h, h, 0.0)], [], [(0, 1, 2, 3)]
        )
        mesh.materials.append(self.ground_material)
        self.ground = _new_object("Ground", mesh)
        self.ground.location = (0.0, 0.0, -float(self.preset["object"]["size"]))

    # ------------------------------------------------------------------ objects
    def _build_object(self, spec: str, index: int) -> Any:
        size = float(self.preset["object"]["size"])
        name = f"Object{index}"
        placed = None
        if spec == "teapot":
            placement = self.preset.get("teapot")
            segments = placement["segments"] if placement else TEAPOT_SEGMENTS
            verts, faces = tessellate(int(segments))
            smooth = True
            if placement:
                placed = place(verts, placement)
        elif spec in PRIMITIVES:
            before = set(bpy.data.objects)
            getattr(bpy.ops.mesh, PRIMITIVES[spec])()
            new = [o for o in bpy.data.objects if o not in before]
            verts, faces = _mesh_arrays(new)
            self._delete(new)
            smooth = spec in ("suzanne", "torus", "sphere")  # flat: cube, cylinder, cone
        else:
            verts, faces = self._import_mesh(spec)
            smooth = True
        if len(verts) == 0 or not faces:
            raise SceneError(f"the mesh {spec} has no faces.")
        if placed is not None:
            verts = placed
        else:
            lo, hi = verts.min(axis=0), verts.max(axis=0)
            extent = float((hi - lo).max())
            if not math.isfinite(extent) or extent <= 0:
                raise SceneError(f"the mesh {spec} has no extent.")
            verts = (verts - (lo + hi) / 2.0) * (size / extent)
        mesh = bpy.data.meshes.new(name)
        mesh.from_pydata(verts.tolist(), [], faces)
        mesh.validate(verbose=False)
        if smooth:
            mesh.shade_smooth()
        else:
            mesh.shade_flat()
        mesh.materials.append(self.object_material)
        obj = _new_object(name, mesh)
        obj.rotation_mode = self.preset["object"]["rotation_mode"]
        obj.hide_render = True
        return obj

    def _import_mesh(self, path: str) -> tuple[np.ndarray, list[list[int]]]:
        p = Path(path)
        suffix = p.suffix.lower()
        if not p.is_file():
            raise SceneError(f"mesh file {path} does not exist.")
        if suffix not in MESH_SUFFIXES:
            raise SceneError(
                f"mesh file {path} has an unsupported type; use {', '.join(MESH_SUFFIXES)}."
            )
        before = set(bpy.data.objects)
        blocks = (bpy.data.materials, bpy.data.images, bpy.data.meshes, bpy.data.textures)
        old_blocks = [set(b) for b in blocks]
        try:
            if suffix == ".blend":
                self._append_blend(p)
            elif suffix == ".obj":
                bpy.ops.wm.obj_import(filepath=str(p))
            elif suffix == ".ply":
                bpy.ops.wm.ply_import(filepath=str(p))
            elif suffix == ".stl":
                bpy.ops.wm.stl_import(filepath=str(p))
            else:
                import addon_utils

                addon_utils.enable("io_scene_gltf2", default_set=True)
                bpy.ops.import_scene.gltf(filepath=str(p))
        except RuntimeError as exc:
            raise SceneError(f"cannot read mesh file {path}: {str(exc).strip()}") from None
        new = [o for o in bpy.data.objects if o not in before]
        meshes = [o for o in new if o.type == "MESH"]
        bpy.context.view_layer.update()
        verts, faces = _mesh_arrays(meshes)
        self._delete(new)
        for block, old in zip(blocks, old_blocks, strict=True):  # whatever the import added
            for item in [i for i in block if i not in old]:
                block.remove(item)
        if not faces:
            if suffix == ".blend" and not meshes:
                raise SceneError(f"{path} holds no mesh object (a .blend needs one).")
            raise SceneError(f"mesh file {path} holds no faces.")
        return verts, faces

    @staticmethod
    def _append_blend(p: Path) -> None:
        """Append every object of a .blend (the asset packs' ``ShapeHare.blend`` ...) and link
        them to the scene, so their world matrices (parents included) apply; the caller keeps
        the meshes, joins them and deletes the rest like any import."""
        try:
            with bpy.data.libraries.load(str(p), link=False) as (src, dst):
                dst.objects = list(src.objects)
        except OSError as exc:
            raise RuntimeError(str(exc)) from None
        for obj in dst.objects:
            if obj is not None and obj.name not in bpy.context.scene.collection.objects:
                bpy.context.scene.collection.objects.link(obj)

    @staticmethod
    def _delete(objs: Sequence[Any]) -> None:
        for obj in objs:
            data = obj.data
            bpy.data.objects.remove(obj, do_unlink=True)
            if isinstance(data, bpy.types.Mesh) and data.users == 0:
                bpy.data.meshes.remove(data)

    def _show_class(self, cls: int) -> None:
        if cls == self.active_class:
            return
        if not 0 <= cls < len(self.objects):
            raise ValueError(f"object class {cls} out of range (0..{len(self.objects) - 1})")
        for i, obj in enumerate(self.objects):
            obj.hide_render = i != cls
        self.active_class = cls

    # ------------------------------------------------------------------ GPU
    def _enable_gpu(self) -> None:
        self.gpu_backend, self.gpu_devices = select_gpu(
            cycles_preferences(), choose=self.gpu_choose
        )
        self.scene.cycles.device = "GPU"
        self.scene.cycles.denoising_use_gpu = True
        # warm-up: compile (or JIT) the kernels and load the scene before timing starts. With
        # the frame's own settings: a renderer whose quality was switched and switched back
        # does not give the noise of a fresh one (measured: the blue-noise pattern then loses
        # about 1 dB at 2 samples), so the quality is never changed here.
        bpy.ops.render.render(write_still=False)

    # ------------------------------------------------------------------ per frame
    def apply(self, frame: Mapping[str, Any], seed: int, object_class: int = 0) -> None:
        """Set one frame's parameters (arrays of 3 numbers each, see ``FRAME_KEYS``)."""
        self._show_class(int(object_class))
        obj = self.objects[self.active_class]
        mat = self.object_materials[self.view_material[int(frame.get("view", 0))]]
        if obj.data.materials[0] != mat:
            obj.data.materials[0] = mat
        loc = tuple(float(v) for v in frame["object_location"])
        obj.location = loc
        obj.rotation_euler = tuple(float(v) for v in frame["object_rotation"])
        self.pivot.location = loc
        self.spot_obj.location = tuple(float(v) for v in frame["spot_location"])
        self.spot.color = tuple(float(v) for v in frame["spot_color"])
        self._color_socket(mat).default_value = (
            *(float(v) for v in frame["object_color"]),
            1.0,
        )
        self._color_socket(self.ground_material).default_value = (
            *(float(v) for v in frame["ground_color"]),
            1.0,
        )
        self.scene.cycles.seed = int(seed)
        # With persistent data Cycles re-syncs its integrator (and so the seed) only when the
        # scene ID is tagged; without this every frame would reuse the first frame's seed.
        self.scene.update_tag()

    def render(self, frame: Mapping[str, Any], seed: int, object_class: int = 0) -> np.ndarray:
        """Render one frame; returns ``(H, W, 3)`` uint8, top row first."""
        t0 = time.perf_counter()
        self.apply(frame, seed, object_class)
        t1 = time.perf_counter()
        bpy.ops.render.render(write_still=False)
        t2 = time.perf_counter()
        bpy.data.images["Render Result"].save_render(self._frame_path, scene=self.scene)
        img = read_bmp(self._frame_path)
        t3 = time.perf_counter()
        self.timings["apply"] += t1 - t0
        self.timings["render"] += t2 - t1
        self.timings["handoff"] += t3 - t2
        self.frames += 1
        if img.shape != (self.resolution, self.resolution, 3):
            raise RuntimeError(f"Blender wrote a {img.shape} frame, expected {self.resolution}^2")
        return img

    def close(self) -> None:
        """Remove the hand-off directory (idempotent; also runs at interpreter exit)."""
        self._finalizer()

    @staticmethod
    def blender_version() -> str:
        return bpy.app.version_string

    @staticmethod
    def datablock_counts() -> dict[str, int]:
        """Number of datablocks per kind (for memory-leak checks)."""
        return {
            k: len(getattr(bpy.data, k))
            for k in ("objects", "meshes", "materials", "images", "lights", "node_groups")
        }
