"""Tests of ident3d.latents.model: block-seeded sampling and config round trips."""

from __future__ import annotations

import numpy as np

from ident3d.latents import (
    BLOCK_SIZE,
    Box,
    LatentModel,
    Sphere,
    latent_model_from_options,
)


def test_same_seed_same_bits_and_ranges_agree():
    model = latent_model_from_options(space=Box(10), conditional="laplace", sigma=0.2)
    a = model.sample_pairs(BLOCK_SIZE + 100, seed=7)
    b = model.sample_pairs(BLOCK_SIZE + 100, seed=7)
    assert np.array_equal(a, b)
    # any range (a shard, a worker's slice) gives the same samples
    part = model.sample_range(BLOCK_SIZE - 50, BLOCK_SIZE + 60, seed=7)
    assert np.array_equal(part, a[BLOCK_SIZE - 50 : BLOCK_SIZE + 60])
    # sample i does not depend on the dataset size
    assert np.array_equal(model.sample_pairs(10, seed=7), a[:10])
    # singles are the first element of the pairs
    assert np.array_equal(model.sample(10, seed=7), a[:10, 0])
    assert not np.array_equal(model.sample_pairs(10, seed=8), a[:10])


def test_config_round_trip():
    model = latent_model_from_options(
        space=Sphere(10), conditional="anisotropic", lambdas="bimodal", ext_tol=0.1
    )
    again = LatentModel.from_config(model.to_config())
    assert again == model
    assert np.array_equal(again.sample_pairs(50, 1), model.sample_pairs(50, 1))
