"""Encoder/decoder pairs: shapes round-trip for images of any square size and for vectors."""

from __future__ import annotations

import pytest
import torch

from model.networks import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder, Residual, build_networks

SMALL = (4, 8, 8)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 20, 20), (1, 21, 21), (3, 17, 17), (1, 64, 64)])
def test_conv_pair_round_trips_shapes(shape: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    enc, dec = build_networks(shape, 6, kind="conv", channels=SMALL)
    assert isinstance(enc, ConvEncoder)
    assert isinstance(dec, ConvDecoder)
    x = torch.rand(5, *shape)
    with torch.no_grad():
        z = enc(x)
        out = dec(z)
    assert z.shape == (5, 6)
    assert out.shape == (5, *shape)
    assert float(out.min()) >= 0.0
    assert float(out.max()) <= 1.0  # sigmoid output, like the [0, 1] pixels


def test_conv_pair_trains_end_to_end() -> None:
    torch.manual_seed(0)
    enc, dec = build_networks((1, 16, 16), 4, kind="conv", channels=SMALL)
    x = torch.rand(8, 1, 16, 16)
    loss = torch.mean((dec(enc(x)) - x) ** 2)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in enc.parameters())
    assert all(p.grad is not None for p in dec.parameters())


def test_conv_bn_normalises_every_conv_stage_of_the_encoder_only() -> None:
    torch.manual_seed(0)
    enc, dec = build_networks((1, 20, 20), 6, kind="conv-bn", channels=SMALL)
    norms = [m for m in enc.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert [m.num_features for m in norms] == list(SMALL)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in dec.modules())
    x = torch.rand(7, 1, 20, 20) * 5 + 3  # far from zero mean, unit variance
    enc.train()
    enc(x)
    assert all(float(m.running_mean.abs().sum()) > 0 for m in norms)  # training updates the statistics
    enc.eval()
    first = enc(x[:1])
    assert torch.allclose(first, enc(x)[:1], atol=1e-5)  # in eval mode an item's code ignores its batch
    assert dec(enc(x)).shape == x.shape
    plain, _ = build_networks((1, 20, 20), 6, kind="conv", channels=SMALL)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())


def test_conv_gn_normalises_every_conv_stage_per_item_in_both_modes() -> None:
    torch.manual_seed(0)
    channels = (4, 16, 6)
    enc, dec = build_networks((1, 20, 20), 6, kind="conv-gn", channels=channels)
    norms = [m for m in enc.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert [(m.num_groups, m.num_channels) for m in norms] == [(4, 4), (8, 16), (2, 6)]
    assert not any(isinstance(m, torch.nn.GroupNorm | torch.nn.BatchNorm2d) for m in dec.modules())
    convs = [m for m in enc.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(m.bias is None for m in convs)  # the norm's shift replaces the conv's bias
    x = torch.rand(7, 1, 20, 20) * 5 + 3
    for train in (True, False):
        enc.train(train)
        assert torch.allclose(enc(x[:1]), enc(x)[:1], atol=1e-5)  # an item's code ignores its batch
    first = enc.features[:2](x)  # conv, then GroupNorm: each group of each item has mean 0, sd 1
    groups = first.reshape(7, 4, -1)
    assert torch.allclose(groups.mean(-1), torch.zeros(7, 4), atol=1e-4)
    assert torch.allclose(groups.std(-1, unbiased=False), torch.ones(7, 4), atol=1e-2)
    assert dec(enc(x)).shape == x.shape


def test_conv_res_adds_a_skip_connected_conv_to_every_stage_of_the_encoder_only() -> None:
    torch.manual_seed(0)
    enc, dec = build_networks((1, 20, 20), 6, kind="conv-res", channels=SMALL)
    plain, plain_dec = build_networks((1, 20, 20), 6, kind="conv", channels=SMALL)
    blocks = [m for m in enc.modules() if isinstance(m, Residual)]
    assert [b.body[0].out_channels for b in blocks] == list(SMALL)
    conv_count = [sum(isinstance(m, torch.nn.Conv2d) for m in n.modules()) for n in (enc, plain, dec, plain_dec)]
    assert conv_count == [6, 3, 3, 3]
    x = torch.rand(7, 1, 20, 20)
    first = enc.features[:3](x)  # conv and ReLU of stage one, then its residual block
    assert torch.allclose(first, blocks[0].body(enc.features[:2](x)) + enc.features[:2](x))
    for block in blocks:  # with the second conv zeroed each block passes its input through
        torch.nn.init.zeros_(block.body[0].weight)
        torch.nn.init.zeros_(block.body[0].bias)
    passed = enc.features[:3](x)
    assert torch.equal(passed, enc.features[:2](x))
    assert dec(enc(x)).shape == x.shape


def test_conv_encoder_rejects_an_unknown_norm() -> None:
    with pytest.raises(ValueError, match="unknown norm 'layer'"):
        ConvEncoder(norm="layer")


@pytest.mark.parametrize("shape", [(64,), (7,), (1, 8, 8), (2, 5, 3)])
def test_mlp_pair_round_trips_shapes(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    enc, dec = build_networks(shape, 3, kind="mlp", hidden=(16, 8))
    assert isinstance(enc, MLPEncoder)
    assert isinstance(dec, MLPDecoder)
    x = torch.rand(4, *shape)
    z = enc(x)
    assert z.shape == (4, 3)
    assert dec(z).shape == (4, *shape)


def test_mlp_decoder_without_sigmoid_is_unbounded() -> None:
    torch.manual_seed(0)
    dec = MLPDecoder((5,), latent_dim=2, hidden=(4,), sigmoid=False)
    out = dec(torch.full((3, 2), 100.0))
    assert out.shape == (3, 5)
    assert (out.abs() > 1).any()


def test_mlp_hidden_layers_follow_the_settings() -> None:
    enc, dec = build_networks((10,), 2, kind="mlp", hidden=(32, 16))
    enc_linear = [m for m in enc.modules() if isinstance(m, torch.nn.Linear)]
    dec_linear = [m for m in dec.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in enc_linear] == [(10, 32), (32, 16), (16, 2)]
    assert [(m.in_features, m.out_features) for m in dec_linear] == [(2, 16), (16, 32), (32, 10)]


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((1, 28, 28), ConvEncoder),
        ((3, 32, 32), ConvEncoder),
        ((1, 16, 16), ConvEncoder),
        ((1, 8, 8), MLPEncoder),  # scikit-learn digits: too small for three poolings
        ((1, 15, 15), MLPEncoder),
        ((64,), MLPEncoder),
        ((2, 28, 28), MLPEncoder),  # neither grey nor RGB
        ((1, 28, 20), MLPEncoder),  # not square
    ],
)
def test_build_networks_auto_choice(shape: tuple[int, ...], expected: type) -> None:
    enc, dec = build_networks(shape, 5, channels=SMALL, hidden=(8,))
    assert isinstance(enc, expected)
    assert dec(enc(torch.rand(2, *shape))).shape == (2, *shape)


@pytest.mark.parametrize("shape", [(64,), (1, 28, 20), (2, 28, 28), (28, 28)])
@pytest.mark.parametrize("kind", ["conv", "conv-bn", "conv-gn", "conv-res"])
def test_conv_rejects_non_images(shape: tuple[int, ...], kind: str) -> None:
    with pytest.raises(ValueError, match="square"):
        build_networks(shape, 5, kind=kind)


def test_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown network kind 'resnet'"):
        build_networks((1, 28, 28), 5, kind="resnet")
