"""Encoder/decoder pairs: a small conv net for square images and an MLP for vectors.

Any ``nn.Module`` pair works with the trainer as long as the encoder maps a batch of
inputs to ``(n, latent_dim)`` and the decoder maps that back to the input shape.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

NETWORK_KINDS = ("auto", "conv", "conv-bn", "conv-gn", "conv-res", "mlp")
CONV_KINDS = {  # the encoder each conv kind builds: its norm, and whether its stages are residual
    "conv": ("none", False), "conv-bn": ("batch", False), "conv-gn": ("group", False), "conv-res": ("none", True)}
GROUPS = 8
NORM_LAYERS = {  # what follows each conv of the encoder, given its channels
    "none": lambda channels: [],
    "batch": lambda channels: [nn.BatchNorm2d(channels)],
    "group": lambda channels: [nn.GroupNorm(math.gcd(GROUPS, channels), channels)],
}


class Residual(nn.Module):
    """``x + body(x)``: the skip connection of a residual stage (He et al. 2016)."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ConvEncoder(nn.Module):
    """Three conv + ReLU + max-pool stages, then a linear map to the latent code.

    ``norm`` puts a normalisation after each conv: ``"batch"`` (BatchNorm) or ``"group"``
    (GroupNorm, up to 8 groups a layer; Wu & He 2018). Both are opt-in levers of the
    label-efficiency protocol (Fashion-MNIST-10). BatchNorm measured worse there, likely because
    the SAE computes its class targets in eval mode, from running statistics, while the loss sees
    batch statistics. GroupNorm normalises each item on its own, the same in both modes, and
    measured level with the plain encoder, so neither is the default.

    ``residual`` deepens each stage by a second conv with a skip connection around it, before
    the pool: twice the convs at each resolution while every gradient still has a short path.
    It measured 0.9 points behind the plain encoder on the same protocol, so it is not the default.
    """

    def __init__(self, image_size: int = 28, in_channels: int = 1, latent_dim: int = 10,
                 channels: Sequence[int] = (32, 64, 128), norm: str = "none", residual: bool = False) -> None:
        super().__init__()
        if norm not in NORM_LAYERS:
            raise ValueError(f"unknown norm {norm!r}: use {', '.join(NORM_LAYERS)}")

        def conv(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=norm == "none"), *NORM_LAYERS[norm](c_out)]

        layers: list[nn.Module] = []
        c_in, size = in_channels, image_size
        for c_out in channels:
            layers += [*conv(c_in, c_out), nn.ReLU(inplace=True)]
            if residual:
                layers += [Residual(nn.Sequential(*conv(c_out, c_out))), nn.ReLU(inplace=True)]
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
            c_in, size = c_out, -(-size // 2)
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c_in * size * size, latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(x), 1))


class ConvDecoder(nn.Module):
    """Mirror of :class:`ConvEncoder`: upsampling to the exact sizes the encoder saw."""

    def __init__(self, image_size: int = 28, out_channels: int = 1, latent_dim: int = 10,
                 channels: Sequence[int] = (32, 64, 128)) -> None:
        super().__init__()
        sizes = [image_size]
        for _ in channels:
            sizes.append(-(-sizes[-1] // 2))
        rev = list(channels)[::-1]
        self.start = (rev[0], sizes[-1])
        self.head = nn.Linear(latent_dim, rev[0] * sizes[-1] * sizes[-1])
        layers: list[nn.Module] = [nn.ReLU(inplace=True)]
        targets = sizes[:-1][::-1]
        outs = [*rev[1:], out_channels]
        c_in = rev[0]
        for i, (size, c_out) in enumerate(zip(targets, outs, strict=True)):
            layers += [nn.Upsample(size=(size, size), mode="nearest"),
                       nn.Conv2d(c_in, c_out, 3, padding=1)]
            if i < len(outs) - 1:
                layers.append(nn.ReLU(inplace=True))
            c_in = c_out
        layers.append(nn.Sigmoid())
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        c, s = self.start
        return self.body(self.head(z).view(-1, c, s, s))


class MLPEncoder(nn.Module):
    """Dense encoder for flat vectors (or images flattened), as the paper uses for meshes."""

    def __init__(self, input_dim: int, latent_dim: int = 10,
                 hidden: Sequence[int] = (256, 128)) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        d = input_dim
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU(inplace=True)]
            d = h
        layers.append(nn.Linear(d, latent_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MLPDecoder(nn.Module):
    """Mirror of :class:`MLPEncoder`; reshapes to ``output_shape`` at the end."""

    def __init__(self, output_shape: Sequence[int], latent_dim: int = 10,
                 hidden: Sequence[int] = (256, 128), sigmoid: bool = True) -> None:
        super().__init__()
        self.output_shape = tuple(int(s) for s in output_shape)
        out_dim = int(torch.tensor(self.output_shape).prod())
        layers: list[nn.Module] = []
        d = latent_dim
        for h in list(hidden)[::-1]:
            layers += [nn.Linear(d, h), nn.ReLU(inplace=True)]
            d = h
        layers.append(nn.Linear(d, out_dim))
        if sigmoid:
            layers.append(nn.Sigmoid())
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, *self.output_shape)


def network_kind(input_shape: Sequence[int], kind: str = "auto") -> str:
    """The kind ``build_networks`` builds for items of ``input_shape``: ``auto`` resolved."""
    shape = tuple(int(s) for s in input_shape)
    if kind != "auto":
        return kind
    return "conv" if len(shape) == 3 and shape[1] == shape[2] and shape[0] in (1, 3) and shape[1] >= 16 else "mlp"


def build_networks(input_shape: Sequence[int], latent_dim: int, kind: str = "auto",
                   channels: Sequence[int] = (32, 64, 128),
                   hidden: Sequence[int] = (256, 128)) -> tuple[nn.Module, nn.Module]:
    """Choose a pair for one item's shape: ``(C, H, W)`` images get the conv pair.

    ``auto`` uses the conv pair for images of at least 16 pixels a side and the MLP
    otherwise: tiny images such as scikit-learn's 8x8 digits lose everything to pooling.
    ``conv-bn`` and ``conv-gn`` are the conv pair with a batch- or group-normalised encoder,
    ``conv-res`` with a residual one.
    """
    shape = tuple(int(s) for s in input_shape)
    is_image = len(shape) == 3 and shape[1] == shape[2] and shape[0] in (1, 3)
    kind = network_kind(shape, kind)
    if kind in CONV_KINDS:
        if not is_image:
            raise ValueError(f"conv networks need square (C, H, W) images with C in 1 or 3, got {shape}")
        norm, residual = CONV_KINDS[kind]
        return (ConvEncoder(shape[1], shape[0], latent_dim, channels, norm, residual),
                ConvDecoder(shape[1], shape[0], latent_dim, channels))
    if kind == "mlp":
        dim = int(torch.tensor(shape).prod())
        return MLPEncoder(dim, latent_dim, hidden), MLPDecoder(shape, latent_dim, hidden)
    raise ValueError(f"unknown network kind {kind!r}: use {', '.join(NETWORK_KINDS)}")
