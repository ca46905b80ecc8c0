"""Encoder and decoder bodies: MLP (optionally gated) and convolutional for C x H x W images.

Encoders map x of shape ``(B, *x_shape)`` to ``(B, 2, L)``: the posterior's location and
pre-softplus scale. Decoders map z of shape ``(..., L)`` (any leading sample/batch dims) to
``(..., P, *x_shape)`` with P parameters per data dimension (see ``Likelihood``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "softplus": nn.Softplus,
    "leaky_relu": nn.LeakyReLU,
    "silu": nn.SiLU,
    # no non-linearity: with gated units, h = (W1 x) * sigmoid(W2 x) as Tomczak & Welling
    "linear": nn.Identity,
}


class GatedLinear(nn.Module):
    """h = act(W1 x + b1) * sigmoid(W2 x + b2), one matrix multiply for both halves."""

    def __init__(self, in_features: int, out_features: int, activation: str):
        super().__init__()
        self.linear = nn.Linear(in_features, 2 * out_features)
        self.act = ACTIVATIONS[activation]()

    def forward(self, x):
        h, gate = self.linear(x).chunk(2, dim=-1)
        return self.act(h) * torch.sigmoid(gate)


class GatedConv(nn.Module):
    """The gated unit over channels: h = act(conv_1(x)) * sigmoid(conv_2(x)), the two halves of
    one (transposed) convolution with twice the output channels (Tomczak & Welling's
    GatedConv2d of the convolutional HVAE)."""

    def __init__(self, conv: nn.Module, activation: str):
        super().__init__()
        self.conv = conv
        self.act = ACTIVATIONS[activation]()

    def forward(self, x):
        h, gate = self.conv(x).chunk(2, dim=1)
        return self.act(h) * torch.sigmoid(gate)


class SeparateInputs(nn.Module):
    """The first hidden layer of a network that reads several inputs, side by side in one
    tensor: each part gets its own (gated) layer of ``width`` units and their outputs are
    joined, as the HVAE of Tomczak & Welling (2018) reads x and z2 in q(z1|x, z2), and z1 and
    z2 in p(x|z1, z2). One layer over the concatenation instead adds the parts' pre-activations."""

    def __init__(self, parts: list[int], width: int, activation: str, gated: bool):
        super().__init__()
        self.parts = [int(p) for p in parts]
        self.layers = nn.ModuleList(
            GatedLinear(p, width, activation) if gated
            else nn.Sequential(nn.Linear(p, width), ACTIVATIONS[activation]())
            for p in self.parts)

    def forward(self, x):
        return torch.cat([layer(h) for layer, h in zip(self.layers, x.split(self.parts, -1))], -1)


def mlp(in_dim: int | list[int], hidden: list[int], out_dim: int, activation: str = "relu",
        gated: bool = False) -> nn.Sequential:
    """Hidden layers (gated or plain) followed by a linear output layer. ``in_dim`` a list of
    sizes: the input is their concatenation, and the first hidden layer is
    :class:`SeparateInputs` (one layer per part, outputs joined)."""
    layers, width = hidden_layers(in_dim, hidden, activation, gated)
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


def hidden_layers(in_dim: int | list[int], hidden: list[int], activation: str = "relu",
                  gated: bool = False) -> tuple[list[nn.Module], int]:
    """The hidden layers of :func:`mlp`, and the width of their output."""
    layers: list[nn.Module] = []
    hidden = list(hidden)
    if isinstance(in_dim, (list, tuple)) and len(in_dim) > 1:
        if not hidden:
            raise ValueError("separate inputs need at least one hidden layer (model.hidden)")
        layers.append(SeparateInputs(list(in_dim), hidden[0], activation, gated))
        width, hidden = len(in_dim) * hidden[0], hidden[1:]
    else:
        width = sum(in_dim) if isinstance(in_dim, (list, tuple)) else in_dim
    for h in hidden:
        if gated:
            layers.append(GatedLinear(width, h, activation))
        else:
            layers += [nn.Linear(width, h), ACTIVATIONS[activation]()]
        width = h
    return layers, width


def input_parts(parts: list[int], separate: bool) -> int | list[int]:
    """``in_dim`` of a network that reads ``parts`` side by side: the sizes themselves when
    ``separate`` (model.separate_inputs: one first layer each), else their total."""
    return [int(p) for p in parts] if separate else int(sum(parts))


class MLPEncoder(nn.Module):
    def __init__(self, x_shape, latent_dim, hidden, activation="relu", gated=False):
        super().__init__()
        self.x_dims = len(x_shape)
        self.latent_dim = latent_dim
        self.body = mlp(math.prod(x_shape), hidden, 2 * latent_dim, activation, gated)

    def forward(self, x):
        h = self.body(x.flatten(-self.x_dims))  # (B, 2L)
        return h.unflatten(-1, (2, self.latent_dim))  # (B, 2, L)


class MLPDecoder(nn.Module):
    def __init__(self, x_shape, latent_dim, hidden, params_per_dim=1, activation="relu",
                 gated=False):
        super().__init__()
        self.out_shape = (params_per_dim, *x_shape)
        # latent_dim: an int, or the sizes of the inputs side by side (see mlp)
        self.body = mlp(latent_dim, list(reversed(hidden)), math.prod(self.out_shape),
                        activation, gated)

    def forward(self, z):
        return self.body(z).unflatten(-1, self.out_shape)  # (..., P, *x_shape)


def conv_sizes(size: tuple[int, int], layers: int) -> list[tuple[int, int]]:
    """Spatial sizes after each stride-2, kernel-4, padding-1 convolution."""
    sizes = [tuple(size)]
    for _ in range(layers):
        h, w = sizes[-1]
        nxt = ((h - 2) // 2 + 1, (w - 2) // 2 + 1)
        if min(nxt) < 1:
            raise ValueError(
                f"images of {size[0]}x{size[1]} are too small for {layers} stride-2 conv "
                "layers; use fewer model.conv_channels or the mlp architecture"
            )
        sizes.append(nxt)
    return sizes


def conv_stack(x_shape, channels, activation="relu", gated=False) -> tuple[nn.Sequential, int]:
    """Stride-2 convolutions (kernel 4, padding 1) over C x H x W images, plain or gated, and
    the number of features they output, flattened."""
    if len(x_shape) != 3:
        raise ValueError(f"a conv encoder needs C x H x W images, got shape {tuple(x_shape)}")
    c, h, w = x_shape
    sizes = conv_sizes((h, w), len(channels))
    layers: list[nn.Module] = []
    for c_out in channels:
        if gated:
            layers.append(GatedConv(nn.Conv2d(c, 2 * c_out, 4, 2, 1), activation))
        else:
            layers += [nn.Conv2d(c, c_out, 4, 2, 1), ACTIVATIONS[activation]()]
        c = c_out
    return nn.Sequential(*layers), c * sizes[-1][0] * sizes[-1][1]


class Features(nn.Module):
    """x (..., *x_shape) -> features (..., F): flattened for an MLP, through a conv stack
    for images (what each level of a hierarchical encoder reads x through)."""

    def __init__(self, x_shape, architecture="mlp", channels=(), activation="relu", gated=False):
        super().__init__()
        self.x_dims = len(x_shape)
        if architecture == "conv":
            self.convs, self.size = conv_stack(x_shape, channels, activation, gated)
        else:
            self.convs, self.size = None, math.prod(x_shape)

    def forward(self, x):
        if self.convs is None:
            return x.flatten(-self.x_dims)
        lead = x.shape[:-3]
        return self.convs(x.reshape(-1, *x.shape[-3:])).flatten(1).reshape(*lead, self.size)


class ConvEncoder(nn.Module):
    """Stride-2 convolutions (kernel 4, padding 1), then a linear map to (loc, scale)."""

    def __init__(self, x_shape, latent_dim, channels, hidden=(), activation="relu", gated=False):
        super().__init__()
        self.convs, flat = conv_stack(x_shape, channels, activation, gated)
        self.head = mlp(flat, list(hidden), 2 * latent_dim, activation, gated)
        self.latent_dim = latent_dim

    def forward(self, x):
        lead = x.shape[:-3]
        h = self.convs(x.reshape(-1, *x.shape[-3:])).flatten(1)
        return self.head(h).reshape(*lead, 2, self.latent_dim)


class ConvDecoder(nn.Module):
    """Mirror of :class:`ConvEncoder`: linear map, then stride-2 transposed convolutions
    whose output padding restores every encoder size exactly (odd sizes included). With
    ``refine`` channels, the last transposed convolution outputs ``channels[0]`` hidden
    channels and stride-1 3 x 3 convolutions at full resolution follow, then a 1 x 1
    convolution to the parameters (the convolutional HVAE's p(x|z), Tomczak & Welling)."""

    def __init__(self, x_shape, latent_dim, channels, hidden=(), params_per_dim=1,
                 activation="relu", gated=False, refine=()):
        super().__init__()
        c_img, h, w = x_shape
        sizes = conv_sizes((h, w), len(channels))
        self.start = (channels[-1], *sizes[-1])
        if gated:  # every hidden unit gated, the first feature map's included
            body, width = hidden_layers(latent_dim, list(reversed(hidden)), activation, True)
            self.head = nn.Sequential(*body, GatedLinear(width, math.prod(self.start), activation))
        else:
            self.head = nn.Sequential(
                mlp(latent_dim, list(reversed(hidden)), math.prod(self.start), activation),
                ACTIVATIONS[activation](),
            )
        layers: list[nn.Module] = []

        def hidden_conv(conv: type, c_in: int, c_out: int, *args, **kwargs):
            if gated:
                layers.append(GatedConv(conv(c_in, 2 * c_out, *args, **kwargs), activation))
            else:
                layers.extend((conv(c_in, c_out, *args, **kwargs), ACTIVATIONS[activation]()))

        out = params_per_dim * c_img
        outs = list(reversed(channels[:-1])) + [channels[0] if refine else out]
        c = channels[-1]
        for i, c_out in enumerate(outs):
            target = sizes[len(channels) - 1 - i]
            source = sizes[len(channels) - i]
            pad = (target[0] - 2 * source[0], target[1] - 2 * source[1])
            if i == len(outs) - 1 and not refine:
                layers.append(nn.ConvTranspose2d(c, c_out, 4, 2, 1, output_padding=pad))
            else:
                hidden_conv(nn.ConvTranspose2d, c, c_out, 4, 2, 1, output_padding=pad)
            c = c_out
        for c_out in refine:
            hidden_conv(nn.Conv2d, c, c_out, 3, 1, 1)
            c = c_out
        if refine:
            layers.append(nn.Conv2d(c, out, 1))
        self.deconvs = nn.Sequential(*layers)
        self.out_shape = (params_per_dim, *x_shape)

    def forward(self, z):
        lead = z.shape[:-1]
        h = self.head(z.reshape(-1, z.shape[-1])).reshape(-1, *self.start)
        return self.deconvs(h).reshape(*lead, *self.out_shape)  # (..., P, C, H, W)


# ------------------------------------------------------------------ architectures


class MLPArchitecture:
    """Builds the bodies of an MLP model (see :data:`vaekit.registry.ARCHITECTURES`)."""

    @staticmethod
    def shape(x_shape) -> tuple[int, ...]:
        return tuple(x_shape)

    @staticmethod
    def encoder(m, x_shape, latent: int) -> nn.Module:
        return MLPEncoder(x_shape, latent, m.hidden, m.activation, m.gated)

    @staticmethod
    def decoder(m, x_shape, in_dim: int, params_per_dim: int) -> nn.Module:
        return MLPDecoder(x_shape, in_dim, m.hidden, params_per_dim, m.activation, m.gated)

    @staticmethod
    def features(m, x_shape) -> Features:
        return Features(x_shape, "mlp")


class ConvArchitecture:
    """Builds the bodies of a convolutional model for C x H x W (or H x W) images."""

    @staticmethod
    def shape(x_shape) -> tuple[int, ...]:
        x_shape = (1, *x_shape) if len(x_shape) == 2 else tuple(x_shape)
        if len(x_shape) != 3:
            raise ValueError(f"the conv architecture needs image data (H x W or C x H x W), got "
                             f"shape {tuple(x_shape)}; use --set model.architecture=\"mlp\"")
        return x_shape

    @staticmethod
    def encoder(m, x_shape, latent: int) -> nn.Module:
        return ConvEncoder(x_shape, latent, m.conv_channels, m.hidden, m.activation, m.gated)

    @staticmethod
    def decoder(m, x_shape, in_dim: int, params_per_dim: int) -> nn.Module:
        return ConvDecoder(x_shape, in_dim, m.conv_channels, m.hidden, params_per_dim, m.activation,
                           m.gated, m.conv_refine)

    @staticmethod
    def features(m, x_shape) -> Features:
        return Features(x_shape, "conv", m.conv_channels, m.activation, m.gated)
