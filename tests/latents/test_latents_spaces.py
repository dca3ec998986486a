"""Tests of ident3d.latents.spaces."""

from __future__ import annotations

from ident3d.latents import (
    Box,
    LatentModel,
    NormalConditional,
    Product,
    Sphere,
    Uniform,
)


def test_product_space_box_and_sphere():
    space = Product(Box(3), Sphere(8))
    model = LatentModel(space, Uniform(), NormalConditional(sigma=0.05))
    z = model.sample_pairs(500, seed=2)
    assert z.shape == (500, 2, 11)
    assert space.contains(z[:, 0]).all() and space.contains(z[:, 1]).all()
