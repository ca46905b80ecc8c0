"""The variational auto-encoder (Kingma & Welling 2014; Rezende et al. 2014).

q(z|x) = N(mu(x), diag sigma^2(x)) from the encoder; p(x|z) from the decoder through a
likelihood; p(z) from a prior module. ``encode``, ``decode`` and ``prior`` return
``torch.distributions`` objects whose ``log_prob`` gives one value per example.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch
from torch import nn
from torch.distributions import Distribution

from .config import latent_levels
from .distributions import MIN_SCALE, DiagonalNormal, gaussian_from
from .likelihoods import Likelihood, build_likelihood
from .priors import Prior, build_prior
from .registry import ARCHITECTURES, MODEL_KINDS


class VAE(nn.Module):
    def __init__(self, encoder: nn.Module, decoder: nn.Module, prior: Prior,
                 likelihood: Likelihood, x_shape: tuple[int, ...], min_scale: float = MIN_SCALE):
        super().__init__()
        self.encoder = encoder
        #: the floor of every Gaussian scale the networks output (model.min_scale)
        self.min_scale = float(min_scale)
        self.decoder = decoder
        self.prior_module = prior
        self.likelihood = likelihood
        self.x_shape = tuple(x_shape)
        self.latent_dim = prior.latent_dim
        #: sizes of the latent levels from the data up (one level here)
        self.levels = [self.latent_dim]
        #: how raw data was transformed before it reached the model (build_vae's data_spec)
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
        return gaussian_from(self.encoder(self.shaped(x)), self.min_scale)  # encoder: (B, 2, L)

    def shaped(self, x: torch.Tensor) -> torch.Tensor:
        """x as the model takes it, (..., *x_shape): flat vectors of the right size (e.g.
        (B, 784) for 1 x 28 x 28 images) are reshaped; any other shape is refused, saying
        what is expected."""
        n = len(self.x_shape)
        if tuple(x.shape[-n:]) == self.x_shape:
            return x
        size = math.prod(self.x_shape)
        if x.dim() >= 1 and x.shape[-1] == size:
            return x.reshape(*x.shape[:-1], *self.x_shape)
        raise ValueError(f"this model takes examples of shape {self.x_shape} (or flat vectors of "
                         f"{size} values), got a tensor of shape {tuple(x.shape)}")

    #: whether encode and decode take a class (see vaekit.conditional)
    conditional = False

    @property
    def hierarchical(self) -> bool:
        """Whether the latent vector holds several levels (``levels``, from the data up; see
        vaekit.hierarchy): the question every reader of a model asks, answered by the model."""
        return len(self.levels) > 1

    @property
    def decoder_input(self) -> int:
        """Width of the decoder's input (z; a conditional model adds its class)."""
        return self.latent_dim

    def given(self, y) -> "VAE":
        """The model with its condition fixed; an unconditional model is its own."""
        return self

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
        """n draws from the model: z ~ p(z), then the mean of p(x|z) (or a draw of x); with a
        ``generator`` the draws are a function of it alone (torch's global RNG untouched)."""
        from .devices import model_device, seeded

        ctx = (seeded(int(torch.randint(2**62, (1,), generator=generator)), model_device(self))
               if generator is not None else contextlib.nullcontext())
        with ctx:
            px = self.decode(self.prior.sample((n,)))
            return px.mean if mean else px.sample()

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The mean of p(x|z) at the posterior mean."""
        return self.decode(self.embed(x)).mean


def model_kind(model_cfg) -> str:
    """The registered model kind a ``ModelConfig`` asks for."""
    if model_cfg.conditional:
        return "conditional"
    return "hierarchical" if len(latent_levels(model_cfg.latent_dim)) > 1 else "vae"


def build_vae(model_cfg, x_shape: tuple[int, ...], likelihood: str,
              init_data: torch.Tensor | None = None, num_classes: int | None = None,
              data_spec: Any = None) -> VAE:
    """Build the model a ``ModelConfig`` describes for data of shape ``x_shape``: its kind
    (:func:`model_kind`), architecture, likelihood and prior from the registries, with the
    ``data_spec`` (how raw data become its inputs) it is built for."""
    arch = ARCHITECTURES.get(model_cfg.architecture)
    x_shape = arch.shape(x_shape)
    if init_data is not None and init_data.shape[1:] != tuple(x_shape):
        init_data = init_data.reshape(-1, *x_shape)
    lik = build_likelihood(likelihood, sigma=model_cfg.sigma, min_sigma=model_cfg.min_sigma)
    model = MODEL_KINDS.build(model_kind(model_cfg), model_cfg, x_shape, lik, arch,
                              init_data=init_data, num_classes=num_classes)
    model.data_spec = data_spec
    if model_cfg.init == "he":
        he_init(model)
    return model


def he_init(model: nn.Module) -> None:
    """Every linear and convolutional layer's weight drawn from N(0, 2 / fan_in) (He et al.
    2015; torch's fan_in, the product of a weight's dimensions after the first), in module
    order from torch's global generator; biases and other parameters are left as built."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")


def top_prior(m, latent: int, x_shape, init_data) -> Prior:
    """The prior module of a model's top (or only) level."""
    return build_prior(m.prior, latent, scales=m.prior_scales, components=m.prior_components,
                       x_shape=tuple(x_shape), init_data=init_data,
                       pseudo_inputs=m.pseudo_inputs)


def _one_level(m, x_shape, lik, arch, *, init_data) -> VAE:
    encoder = arch.encoder(m, x_shape, m.latent_dim)  # (built in this order since v0.1: the
    decoder = arch.decoder(m, x_shape, m.latent_dim, lik.params_per_dim)  # same initial weights)
    return VAE(encoder, decoder, top_prior(m, m.latent_dim, x_shape, init_data), lik, x_shape,
               m.min_scale)
