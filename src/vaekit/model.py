"""The variational auto-encoder (Kingma & Welling 2014; Rezende et al. 2014).

q(z|x) = N(mu(x), diag sigma^2(x)) from the encoder; p(x|z) from the decoder through a
likelihood; p(z) from a prior module. ``encode``, ``decode`` and ``prior`` return
``torch.distributions`` objects whose ``log_prob`` gives one value per example.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.distributions import Distribution

from .distributions import DiagonalNormal, Likelihood, Prior, build_likelihood, build_prior, gaussian_from
from .config import latent_levels
from .networks import ConvDecoder, ConvEncoder, Features, MLPDecoder, MLPEncoder


class VAE(nn.Module):
    def __init__(self, encoder: nn.Module, decoder: nn.Module, prior: Prior,
                 likelihood: Likelihood, x_shape: tuple[int, ...]):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.prior_module = prior
        self.likelihood = likelihood
        self.x_shape = tuple(x_shape)
        self.latent_dim = prior.latent_dim
        #: sizes of the latent levels from the data up (one level here)
        self.levels = [self.latent_dim]
        #: how raw data was transformed before it reached the model (set by load_run/train)
        self.data_spec: Any = None

    @property
    def top_slice(self) -> slice:
        """Where the top level sits in the latent vector (all of it, for one level)."""
        return slice(self.latent_dim - self.levels[-1], self.latent_dim)

    @property
    def noise_shape(self) -> tuple[int, ...]:
        """The shape of the standard normal noise one reparameterised draw of z takes, per
        example (``posterior.rsample_from(eps)``): callers draw it, the model says its shape."""
        return (self.latent_dim,)

    def encode(self, x: torch.Tensor) -> DiagonalNormal:
        """q(z|x), batch shape ``x.shape[:-len(x_shape)]``, event shape ``(L,)``."""
        return gaussian_from(self.encoder(x))  # encoder: (B, 2, L)

    def decode(self, z: torch.Tensor) -> Distribution:
        """p(x|z), batch shape ``z.shape[:-1]``, event shape ``x_shape``."""
        return self.likelihood(self.decoder(z), len(self.x_shape))

    @property
    def prior(self) -> Distribution:
        """p(z), event shape ``(L,)``."""
        return self.prior_module(self.encode)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The default embedding: the posterior mean E_q[z] (deterministic)."""
        return self.encode(x).mean

    @torch.no_grad()
    def sample(self, n: int, mean: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws from the model: z ~ p(z), then the mean of p(x|z) (or a draw of x)."""
        z = self.prior.sample((n,))
        px = self.decode(z)
        return px.mean if mean else px.sample()

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The mean of p(x|z) at the posterior mean."""
        return self.decode(self.embed(x)).mean


def build_vae(model_cfg, x_shape: tuple[int, ...], likelihood: str,
              init_data: torch.Tensor | None = None) -> VAE:
    """Build a VAE from a ``ModelConfig`` for data of shape ``x_shape``: one level for an
    int ``latent_dim``, a :class:`~vaekit.hierarchy.HierarchicalVAE` for a list of sizes."""
    m = model_cfg
    levels = latent_levels(m.latent_dim)
    total = sum(levels)
    lik = build_likelihood(likelihood, sigma=m.sigma, min_sigma=m.min_sigma)
    if m.architecture == "conv":
        if len(x_shape) == 2:
            x_shape = (1, *x_shape)
        if len(x_shape) != 3:
            raise ValueError(
                f"the conv architecture needs image data (H x W or C x H x W), got shape "
                f"{tuple(x_shape)}; use --set model.architecture=\"mlp\""
            )
        if len(levels) == 1:
            encoder = ConvEncoder(x_shape, total, m.conv_channels, m.hidden, m.activation)
        decoder = ConvDecoder(x_shape, total, m.conv_channels, m.hidden,
                              lik.params_per_dim, m.activation)
    else:
        if len(levels) == 1:
            encoder = MLPEncoder(x_shape, total, m.hidden, m.activation, m.gated)
        decoder = MLPDecoder(x_shape, total, m.hidden, lik.params_per_dim,
                             m.activation, m.gated)
    if init_data is not None and init_data.shape[1:] != tuple(x_shape):
        init_data = init_data.reshape(-1, *x_shape)
    prior = build_prior(m.prior, levels[-1], scales=m.prior_scales,
                        components=m.prior_components, x_shape=tuple(x_shape),
                        init_data=init_data)
    if len(levels) == 1:
        return VAE(encoder, decoder, prior, lik, x_shape)
    from .hierarchy import HierarchicalVAE

    features = Features(x_shape, m.architecture, m.conv_channels, m.activation)
    return HierarchicalVAE(features, levels, decoder, prior, lik, x_shape, m.hidden,
                           m.activation, m.gated)
