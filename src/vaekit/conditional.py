"""Conditional VAEs (Sohn et al. 2015; Kingma et al. 2014's M2 without the classifier):
q(z|x, y), p(x|z, y), with p(z|y) = p(z) the model's prior for every class.

The class y enters both networks as a one-hot vector (or any vector of class weights, which
lets a decoder interpolate between classes): the encoder reads the features of x beside it,
the decoder reads z beside it. ``given(y)`` fixes the condition and returns a view with the
unconditional contract (``encode(x)``, ``decode(z)``, ``prior``), which is what the trainer,
the objectives and evaluation take: nothing downstream knows the model is conditional.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution

from .distributions import MIN_SCALE, DiagonalNormal, gaussian_from
from .errors import VaekitError
from .likelihoods import Likelihood
from .model import VAE, top_prior
from .networks import Features, input_parts, mlp
from .priors import Prior


class ConditionalVAE(VAE):
    """q(z|x, y) and p(x|z, y) for ``num_classes`` classes; see the module."""

    conditional = True

    def __init__(self, features: Features, num_classes: int, decoder: nn.Module, prior: Prior,
                 likelihood: Likelihood, x_shape, hidden, activation: str = "relu",
                 gated: bool = False, separate_inputs: bool = False,
                 min_scale: float = MIN_SCALE):
        encoder = nn.ModuleDict({  # reads x's features beside the one-hot class
            "features": features,
            "head": mlp(input_parts([features.size, num_classes], separate_inputs), list(hidden),
                        2 * prior.latent_dim, activation, gated)})
        super().__init__(encoder, decoder, prior, likelihood, x_shape, min_scale)
        self.num_classes = int(num_classes)

    @property
    def decoder_input(self) -> int:
        """Width of the decoder's input: z beside the one-hot class."""
        return self.latent_dim + self.num_classes

    def condition(self, y: torch.Tensor) -> torch.Tensor:
        """Class indices (B,) -> one-hot (B, K); class weights (B, K) pass as they are."""
        if y.dim() >= 1 and y.shape[-1] == self.num_classes and y.is_floating_point():
            return y
        y = torch.as_tensor(y).long()
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
            raise VaekitError(f"class labels must lie in 0..{self.num_classes - 1}, got "
                              f"{int(y.min())}..{int(y.max())}")
        return F.one_hot(y, self.num_classes).float()

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> DiagonalNormal:
        """q(z|x, y)."""
        if y is None:
            raise VaekitError("this model is conditional: encoding needs each example's class "
                              "(encode(x, y))")
        c = self.condition(y).to(x.device)
        h = self.encoder["features"](self.shaped(x))
        params = self.encoder["head"](torch.cat([h, c.to(h.dtype)], -1))
        return gaussian_from(params.unflatten(-1, (2, self.latent_dim)), self.min_scale)

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> Distribution:
        """p(x|z, y); z (..., B, L) with y for B examples, or one y for every z."""
        if y is None:
            raise VaekitError("this model is conditional: decoding needs a class (decode(z, y))")
        c = self.condition(y).to(device=z.device, dtype=z.dtype)
        c = c.expand(*z.shape[:-1], self.num_classes)
        return self.likelihood(self.decoder(torch.cat([z, c], -1)), len(self.x_shape))

    def prior_for(self, y: torch.Tensor | None = None) -> Distribution:
        """p(z|y): the prior, the same for every class."""
        return self.prior_module(None)

    @property
    def prior(self) -> Distribution:
        return self.prior_for(None)

    def given(self, y: torch.Tensor) -> "Conditioned":
        return Conditioned(self, y)

    def embed(self, x, y=None):
        return self.encode(x, y).mean

    @torch.no_grad()
    def reconstruct(self, x, y=None):
        return self.decode(self.embed(x, y), y).mean

    @torch.no_grad()
    def sample(self, n: int, y=None, mean: bool = True) -> torch.Tensor:
        """n draws for class(es) y: z ~ p(z), then the mean of p(x|z, y) (or a draw)."""
        if y is None:
            raise VaekitError("this model is conditional: sampling needs a class (sample(n, y))")
        y = torch.as_tensor(y)
        y = y.expand(n) if y.dim() == 0 else y
        px = self.decode(self.prior.sample((n,)), y)
        return px.mean if mean else px.sample()


class Conditioned:
    """A conditional model with its classes fixed: ``encode(x)``, ``decode(z)`` and
    ``prior`` as an unconditional model has them; every other attribute is the model's."""

    def __init__(self, model: ConditionalVAE, y: torch.Tensor):
        self.model = model
        self.y = y

    def encode(self, x):
        return self.model.encode(x, self.y)

    def decode(self, z):
        return self.model.decode(z, self.y)

    @property
    def prior(self):
        return self.model.prior_for(self.y)

    def __getattr__(self, name):
        return getattr(self.model, name)


def _build(m, x_shape, lik, arch, *, init_data, num_classes) -> ConditionalVAE:
    if not num_classes:
        raise ValueError("model.conditional = true needs data with class labels")
    prior = top_prior(m, m.latent_dim, x_shape, init_data)
    features = arch.features(m, x_shape)
    decoder = arch.decoder(m, x_shape, input_parts([m.latent_dim, num_classes], m.separate_inputs),
                           lik.params_per_dim)
    return ConditionalVAE(features, num_classes, decoder, prior, lik, x_shape, m.hidden,
                          m.activation, m.gated, m.separate_inputs, m.min_scale)
