"""Every public import path that README.md, DEVELOPING.md and docs/*.md document still works,
and every public name of the modules that became packages (latents, store, data, train, eval,
render) is still importable from its old module path (the packages' ``__init__`` re-export them)."""

from __future__ import annotations

import importlib

import pytest

#: The import statements of the docs, verbatim.
DOCUMENTED_IMPORTS = [
    "from ident3d import metrics, eval as ev",
    "from ident3d import render as R",
    "from ident3d import store",
    "from ident3d.data import ImageDataset, PairDataset, KNNPairDataset, make_loader",
    "from ident3d.data import load_to_device",
    "from ident3d.latents import latent_model_from_options",
    "from ident3d.scenes import load_preset",
    "from ident3d.train import load_run",
]

#: Dotted paths and ``module.name`` uses in the docs (README, DEVELOPING, docs/*.md).
DOCUMENTED_PATHS = [
    "ident3d.blender.devices.select_gpu",
    "ident3d.blender.scene.SceneRenderer",
    "ident3d.data.Normalize",
    "ident3d.data.knn_diagnostics",
    "ident3d.data.simulate_knn",
    "ident3d.data.summarise_knn",
    "ident3d.errors.UsageError",
    "ident3d.errors.DataError",
    "ident3d.eval.evaluate",
    "ident3d.eval.evaluate_run",
    "ident3d.eval.write_report",
    "ident3d.eval.compare",
    "ident3d.eval.encode_synthetic",
    "ident3d.eval.encode_dataset",
    "ident3d.eval.format_table",
    "ident3d.eval.evaluate_encoder",
    "ident3d.eval.load_encoder",
    "ident3d.eval.load_embeddings",
    "ident3d.store.export_hf",
    "ident3d.store.export_webdataset",
    "ident3d.latents.FACTORS",
    "ident3d.latents.FACTOR_NAMES",
    "ident3d.latents.BLOCK_SIZE",
    "ident3d.latents.LatentMapping.to_scene",
    "ident3d.latents.LatentModel.sample",
    "ident3d.latents.LatentModel.sample_pairs",
    "ident3d.latents.LatentModel.from_config",
    "ident3d.latents.factor_table",
    "ident3d.latents.SCM.sample",
    "ident3d.latents.scm_from_dict",
    "ident3d.latents.StructuredModel.sample_range_with_classes",
    "ident3d.latents.build_structured_model",
    "ident3d.latents.parse_blocks",
    "ident3d.latents.truncated_normal_mean",
    "ident3d.scenes.view_preset",
    "ident3d.latents.make_conditional",
    "ident3d.latents.Box",
    "ident3d.latents.Sphere",
    "ident3d.latents.Unbounded",
    "ident3d.latents.Product",
    "ident3d.latents.Uniform",
    "ident3d.latents.Normal",
    "ident3d.latents.Laplace",
    "ident3d.latents.NormalConditional",
    "ident3d.latents.LaplaceConditional",
    "ident3d.latents.GenNormalConditional",
    "ident3d.latents.VMFConditional",
    "ident3d.latents.AnisotropicNormalConditional",
    "ident3d.latents.MultimodalSpec",
    "ident3d.latents.sample_multimodal",
    "ident3d.text.word_tokenize",
    "ident3d.text.Vocabulary",
    "ident3d.text.Palette",
    "ident3d.store.read_text",
    "ident3d.render.render_multimodal",
    "ident3d.data.MultimodalDataset",
    "ident3d.train.train_image_text",
    "ident3d.eval.evaluate_image_text",
    "ident3d.latents.hsv_to_rgb",
    "ident3d.metrics.compare_lambdas",
    "ident3d.metrics.mcc",
    "ident3d.metrics.linear_r2",
    "ident3d.metrics.kernel_r2",
    "ident3d.metrics.block_r2",
    "ident3d.metrics.logistic_accuracy",
    "ident3d.eval.dataset_factors",
    "ident3d.eval.FactorInfo",
    "ident3d.train.Augment",
    "ident3d.train.AugmentSpec",
    "ident3d.render.frame_seed",
    "ident3d.render.RenderJob",
    "ident3d.render.render_dataset",
    "ident3d.render.render_fanout",
    "ident3d.render.resolve_shard",
    "ident3d.render.gpus.worker_devices",
    "ident3d.render.gpus.GpuLayout",
    "ident3d.store.merge_records",
    "ident3d.store.deferred_merge",
    "ident3d.store.read_records",
    "ident3d.render.render_scene_latents",
    "ident3d.scenes.scene_params",
    "ident3d.store.ShardWriter",
    "ident3d.store.commit_shard",
    "ident3d.store.create_dataset",
    "ident3d.store.map_images",
    "ident3d.store.missing_shards",
    "ident3d.store.open_dataset",
    "ident3d.store.shard_range",
    "ident3d.store.export_original",
    "ident3d.store.Dataset",
    "ident3d.synthetic.draw_mixing_weights",
    "ident3d.train.load_run",
    "ident3d.train.all_gather_with_grad",
    "ident3d.train.global_batch_loss",
    "ident3d.losses.Candidates",
    "ident3d.train.train",
    "ident3d.train.Run",
]

#: The public names of the six modules that became packages, at their old paths.
OLD_MODULE_NAMES = {
    "ident3d.latents": [
        "AnisotropicNormalConditional", "BLOCK_SIZE", "Box", "CONDITIONALS", "Conditional",
        "FACTORS", "FACTOR_NAMES", "Factor", "GenNormalConditional", "HUE_MODES", "Laplace",
        "LaplaceConditional", "LatentMapping", "LatentModel", "N_FACTORS", "Normal",
        "NormalConditional", "Product", "Space", "Sphere", "Unbounded", "Uniform",
        "VMFConditional", "anisotropic_lambdas", "block_rng", "conditional_from_config",
        "factor_table", "hsv_to_rgb", "latent_model_from_options", "make_conditional",
        "make_space", "marginal_from_config", "parse_dims", "sample_vmf", "space_from_config",
        "sphere_angles",
    ],
    "ident3d.store": [
        "CAUSAL3DIDENT_CLASSES", "COMPRESSIONS", "DEFAULT_COMPRESSION", "DEFAULT_SHARD_SIZE",
        "DataError", "Dataset", "FORMAT_NAME", "FORMAT_VERSION", "KINDS", "LOCK_NAME",
        "MANIFEST_NAME", "MIN_SHARD_DIGITS", "SCENE_DIM", "Sample", "ShardInfo", "ShardWriter",
        "UsageError", "VerifyReport", "commit_shard", "convert_original", "create_dataset",
        "decode_png", "describe_dataset", "export_original", "index_digits", "is_complete",
        "manifest_lock", "missing_shards", "open_dataset", "read_manifest",
        "scan_original_layout", "sha256_file", "shard_digits", "shard_file_name", "shard_range",
        "verify_dataset",
    ],
    "ident3d.data": [
        "ANCHORS", "BACKENDS", "EpochSampler", "GPUDataset", "ImageDataset", "KNNPairDataset",
        "LAYOUTS", "NearestNeighbours", "Normalize", "PairDataset", "collate", "detect_layout",
        "format_knn_diagnostics", "knn_diagnostics", "load_to_device", "make_loader",
        "simulate_knn", "summarise_knn",
    ],
    "ident3d.train": [
        "CKPT_FORMAT", "DatasetSource", "RUN_FORMAT", "Run", "SCHEDULES", "SyntheticSource",
        "deep_merge", "default_config", "load_run", "load_toml", "lr_factor", "pick_device",
        "preprocess_images", "resolve_config", "score", "train",
    ],
    "ident3d.eval": [
        "EvalData", "EvalResult", "PLOT_POINTS", "REPORT_FILE", "REPORT_FORMAT",
        "SYNTHETIC_SAMPLES", "compare", "default_blocks", "encode_dataset", "encode_synthetic",
        "evaluate", "evaluate_run", "factor_names", "format_table", "load_report",
        "plot_lambdas", "plot_predictions", "plot_r2_bars", "render_markdown", "resolve_blocks",
        "write_report",
    ],
    "ident3d.render": [
        "DEFAULT_CHUNK", "INSTALL_HINT", "MAX_DEFAULT_WORKERS", "MAX_RESOLUTION", "MIN_RESOLUTION",
        "MockRenderer", "RENDERERS", "RenderJob", "RenderSummary", "Task", "WorkerSpec",
        "blender_version", "check_objects", "check_resolution", "default_threads",
        "default_workers", "frame_seed", "iter_tasks", "load_latents_file", "make_renderer",
        "parse_shard", "prepare_dataset", "render_dataset", "render_scene_latents", "render_task",
        "require_bpy", "sample_classes", "select_shards", "traversal_figure", "traversal_latents",
        "_rss_kib",  # not public, but benchmarks/bench_render.py uses it
    ],
}  # fmt: skip


def _resolve(path: str) -> object:
    """Import the longest module prefix of ``path`` and get the rest as attributes."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(path)


@pytest.mark.parametrize("statement", DOCUMENTED_IMPORTS)
def test_documented_import_statements(statement: str) -> None:
    exec(statement, {})


@pytest.mark.parametrize("path", DOCUMENTED_PATHS)
def test_documented_dotted_paths(path: str) -> None:
    if path.startswith("ident3d.blender."):
        pytest.importorskip("bpy")
    assert _resolve(path) is not None


@pytest.mark.parametrize("module", sorted(OLD_MODULE_NAMES))
def test_old_module_paths_keep_their_names(module: str) -> None:
    mod = importlib.import_module(module)
    missing = [n for n in OLD_MODULE_NAMES[module] if not hasattr(mod, n)]
    assert not missing, f"{module} lost {missing}"
    ns: dict[str, object] = {}
    exec(f"from {module} import {', '.join(OLD_MODULE_NAMES[module])}", ns)
    assert all(ns[n] is getattr(mod, n) for n in OLD_MODULE_NAMES[module])
