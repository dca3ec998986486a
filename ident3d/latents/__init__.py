"""The latent model of 3DIdent: the factor table, spaces, marginals and conditionals (numpy only).

Everything here draws from a seeded :class:`numpy.random.Generator`. Dataset-level sampling
(:meth:`LatentModel.sample_pairs`) works in fixed blocks of :data:`BLOCK_SIZE` samples, block
``b`` seeded by ``SeedSequence(seed, spawn_key=(b,))``: sample ``i`` is the same whatever the
dataset size, the worker count or the sharding.

Conventions
-----------
* A *space* has a dimension ``dim``; points are rows of an ``(n, dim)`` float64 array.
* A *marginal* draws ``z ~ p(z)`` on a space; a *conditional* draws ``z~ ~ p(z~ | z)``.
* Box conditionals are truncated to the box by rejection, coordinate by coordinate (each
  coordinate of ``z~`` follows the noise distribution centred on ``z``, truncated to
  ``[low, high]``); never by clipping.
* On a sphere, additive conditionals are projected back to the sphere
  (``normalise(z + d)``), optionally keeping only draws with ``| |z + d| - 1 | < ext_tol``
  (the AnInfoNCE "extended sphere" rule); :class:`VMFConditional` samples the exact
  von Mises-Fisher distribution.
* A conditional may act on a subset ``dims`` of the coordinates; the others are copied.

The package holds one concept per module: :mod:`~ident3d.latents.factors` (the factor table),
:mod:`~ident3d.latents.spaces`, :mod:`~ident3d.latents.marginals`,
:mod:`~ident3d.latents.conditionals`, :mod:`~ident3d.latents.model` (:class:`LatentModel`) and
:mod:`~ident3d.latents.modes` (:class:`LatentMapping`), :mod:`~ident3d.latents.scm` (structural
causal models), :mod:`~ident3d.latents.pairs` (content/style/view blocks) and
:mod:`~ident3d.latents.structured` (:class:`StructuredModel`, both together). Everything is re-exported here.
"""

from ident3d.latents.conditionals import (
    CONDITIONALS,
    AnisotropicNormalConditional,
    AnyConditional,
    Conditional,
    GenNormalConditional,
    LaplaceConditional,
    NormalConditional,
    VMFConditional,
    anisotropic_lambdas,
    conditional_from_config,
    make_conditional,
    sample_vmf,
)
from ident3d.latents.factors import (
    FACTOR_NAMES,
    FACTORS,
    N_FACTORS,
    Factor,
    factor_table,
    parse_dims,
)
from ident3d.latents.marginals import Laplace, Normal, Uniform, marginal_from_config
from ident3d.latents.model import BLOCK_SIZE, LatentModel, block_rng, latent_model_from_options
from ident3d.latents.modes import HUE_MODES, LatentMapping, hsv_to_rgb, sphere_angles
from ident3d.latents.multimodal import (
    IMAGE_COLUMNS,
    TEXT_COLUMNS,
    TEXT_INT_COLUMNS,
    MultimodalSpec,
    multimodal_scene_latents,
    sample_multimodal,
)
from ident3d.latents.pairs import Block, PairStructure, dims_structure, parse_blocks
from ident3d.latents.scm import (
    CLASS_FACTOR,
    SCM,
    load_scm_file,
    scm_from_dict,
    truncated_normal,
    truncated_normal_mean,
)
from ident3d.latents.spaces import (
    Box,
    Product,
    Space,
    Sphere,
    Unbounded,
    make_space,
    space_from_config,
)
from ident3d.latents.structured import (
    StructuredModel,
    annotate_factor_table,
    build_structured_model,
)

__all__ = [
    "BLOCK_SIZE",
    "CLASS_FACTOR",
    "CONDITIONALS",
    "FACTORS",
    "FACTOR_NAMES",
    "HUE_MODES",
    "IMAGE_COLUMNS",
    "N_FACTORS",
    "SCM",
    "TEXT_COLUMNS",
    "TEXT_INT_COLUMNS",
    "AnisotropicNormalConditional",
    "AnyConditional",
    "Block",
    "Box",
    "Conditional",
    "Factor",
    "GenNormalConditional",
    "Laplace",
    "LaplaceConditional",
    "LatentMapping",
    "LatentModel",
    "MultimodalSpec",
    "Normal",
    "NormalConditional",
    "PairStructure",
    "Product",
    "Space",
    "Sphere",
    "StructuredModel",
    "Unbounded",
    "Uniform",
    "VMFConditional",
    "anisotropic_lambdas",
    "annotate_factor_table",
    "block_rng",
    "build_structured_model",
    "conditional_from_config",
    "dims_structure",
    "factor_table",
    "hsv_to_rgb",
    "latent_model_from_options",
    "load_scm_file",
    "make_conditional",
    "make_space",
    "marginal_from_config",
    "multimodal_scene_latents",
    "parse_blocks",
    "parse_dims",
    "sample_multimodal",
    "sample_vmf",
    "scm_from_dict",
    "space_from_config",
    "sphere_angles",
    "truncated_normal",
    "truncated_normal_mean",
]
