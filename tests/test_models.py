"""Encoders: the synthetic MLP, torchvision backbones, output constraints."""

from __future__ import annotations

import pytest
import torch

from ident3d.errors import UsageError
from ident3d.models import (
    BackboneEncoder,
    MLPEncoder,
    OutputConstraint,
    build_encoder,
    default_model_spec,
    mlp_widths,
)


def test_mlp_matches_the_papers_widths():
    enc = build_encoder(default_model_spec("mlp", 10))
    linears = [m for m in enc.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (10, 100), (100, 500), (500, 500), (500, 500), (500, 500), (500, 100), (100, 10),
    ]  # fmt: skip
    acts = [m for m in enc.modules() if isinstance(m, torch.nn.LeakyReLU)]
    assert len(acts) == 6
    assert mlp_widths(3) == [30, 150, 150, 150, 150, 30]
    assert enc(torch.randn(4, 10)).shape == (4, 10)


def test_constraints():
    h = torch.randn(64, 5) * 10
    box = OutputConstraint("box", bound=2.0)(h)
    assert box.abs().max() <= 2.0 and box.min() < 0 < box.max()
    sph = OutputConstraint("sphere", radius=3.0)(h)
    assert torch.allclose(sph.norm(dim=1), torch.full((64,), 3.0))
    learn = OutputConstraint("sphere", radius=2.0, learn_radius=True)
    assert [n for n, _ in learn.named_parameters()] == ["radius"]
    assert [n for n, _ in OutputConstraint("sphere").named_parameters()] == []
    assert torch.equal(OutputConstraint("none")(h), h)
    with pytest.raises(UsageError):
        OutputConstraint("ball")


def test_learnable_radius_gets_gradient():
    enc = MLPEncoder(3, 2, [8], constraint=OutputConstraint("sphere", learn_radius=True))
    enc(torch.randn(5, 3)).sum().backward()
    assert enc.constraint.radius.grad is not None


def test_resnet18_from_scratch_has_the_papers_head():
    spec = default_model_spec("torchvision", 10)
    enc = build_encoder(spec)
    assert isinstance(enc, BackboneEncoder)
    assert enc.backbone.fc.out_features == 100  # 10n features
    assert isinstance(enc.head[0], torch.nn.LeakyReLU)
    assert (enc.head[1].in_features, enc.head[1].out_features) == (100, 10)
    enc.eval()
    with torch.no_grad():
        out = enc(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 10)
    # from scratch: two builds under different seeds differ (no pretrained weights)
    torch.manual_seed(1)
    a = build_encoder(spec).backbone.conv1.weight
    torch.manual_seed(2)
    b = build_encoder(spec).backbone.conv1.weight
    assert not torch.equal(a, b)


def test_other_backbone_by_name_and_unknown_name():
    spec = {**default_model_spec("torchvision", 4), "backbone": "mobilenet_v3_small"}
    enc = build_encoder(spec).eval()
    with torch.no_grad():
        assert enc(torch.randn(1, 3, 64, 64)).shape == (1, 4)
    with pytest.raises(UsageError, match="resnet19"):
        build_encoder({**spec, "backbone": "resnet19"})
    with pytest.raises(UsageError):
        build_encoder({"kind": "transformer"})


def test_state_dict_roundtrip_weights_only(tmp_path):
    spec = {**default_model_spec("mlp", 3), "constraint": "sphere", "learn_radius": True}
    a = build_encoder(spec)
    torch.save(a.state_dict(), tmp_path / "m.pt")
    b = build_encoder(spec)
    b.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))
    x = torch.randn(3, 3)
    assert torch.equal(a(x), b(x))
