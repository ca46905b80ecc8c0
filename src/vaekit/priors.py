"""Priors p(z): modules whose ``forward`` returns a distribution with event shape ``(L,)``.

- :class:`StandardNormalPrior` N(0, I) and :class:`DiagonalNormalPrior` N(0, diag(s^2));
- :class:`MixturePrior`, a learnable mixture of diagonal Gaussians;
- :class:`VampPrior` (Tomczak & Welling 2018): p(z) = 1/K sum_k q(z | u_k) with learnable
  pseudo-inputs u_k pushed through the encoder.

A new prior is a module here, a builder that declares the arguments it takes, and one line
in :data:`vaekit.registry.PRIORS`.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Categorical, Distribution, MixtureSameFamily

from .devices import wide_dtype
from .distributions import MIN_SCALE, diagonal_normal
from .registry import PRIORS


class Prior(nn.Module):
    """Base class: ``forward(encoder)`` returns p(z); ``encoder`` maps x to q(z|x)."""

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim

    def forward(self, encoder: Callable[[torch.Tensor], Distribution] | None = None) -> Distribution:
        raise NotImplementedError


class DiagonalNormalPrior(Prior):
    """N(0, diag(scales^2)); fixed, not learned."""

    def __init__(self, scales: torch.Tensor | list[float]):
        scales = torch.as_tensor(scales, dtype=torch.float32)
        super().__init__(int(scales.numel()))
        self.register_buffer("loc", torch.zeros_like(scales))
        self.register_buffer("scale", scales.clone())

    def forward(self, encoder=None) -> Distribution:
        return diagonal_normal(self.loc, self.scale)


class StandardNormalPrior(DiagonalNormalPrior):
    """N(0, I), the classic prior of Kingma & Welling (2014)."""

    def __init__(self, latent_dim: int):
        super().__init__(torch.ones(latent_dim))


class DiagonalGaussianMixture(MixtureSameFamily):
    """sum_k w_k N(loc_k, diag(scale_k^2)) as ``MixtureSameFamily`` (sampling, mean,
    variance), with ``log_prob`` through matrix products instead of a (..., K, L) tensor:

        sum_l (z_l - m_kl)^2 / s_kl^2 = z^2 . (1/s_k^2) - 2 z . (m_k / s_k^2) + sum_l m_kl^2 / s_kl^2,

    computed in float64 so the expansion loses nothing to cancellation even for narrow
    components (on Apple's MPS, which has no float64, the differences are formed directly,
    in chunks of rows). For a VampPrior's 500 components this is most of a training step's saving."""

    def __init__(self, logits: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor):
        super().__init__(Categorical(logits=logits, validate_args=False), diagonal_normal(loc, scale),
                         validate_args=False)
        self.component_loc, self.component_scale = loc, scale  # (K, L)

    #: rows of z per chunk of the direct (N, K, L) form used where float64 is missing
    DIRECT_ROWS = 256

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        dtype = wide_dtype(value.device)
        z = value.reshape(-1, value.shape[-1]).to(dtype)  # (N, L)
        loc, scale = self.component_loc.to(dtype), self.component_scale.to(dtype)
        if dtype == torch.float64:
            quad = _expanded_quadratic(z, loc, scale)
        else:  # MPS: no float64, so no expansion (its cancellation needs it); chunked differences
            quad = torch.cat([(((zc[:, None] - loc) / scale) ** 2).sum(-1)
                              for zc in z.split(self.DIRECT_ROWS)]) if len(z) else z.new_zeros(0, len(loc))
        log_norm = -scale.log().sum(-1) - 0.5 * loc.shape[-1] * math.log(2 * math.pi)  # (K,)
        log_w = torch.log_softmax(self.mixture_distribution.logits.to(dtype), -1)
        out = torch.logsumexp(log_w + log_norm - 0.5 * quad, -1)  # (N,)
        return out.to(value.dtype).reshape(value.shape[:-1])


def _expanded_quadratic(z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """sum_l (z_nl - m_kl)^2 / s_kl^2 for all n, k as two matrix products: (N, K)."""
    prec = scale.pow(-2)  # (K, L)
    quad = torch.addmm((loc.square() * prec).sum(-1), z.square(), prec.T)
    return quad.addmm_(z, (loc * prec).T, alpha=-2).clamp_(min=0)


class MixturePrior(Prior):
    """A learnable mixture of K diagonal Gaussians: sum_k pi_k N(m_k, diag(s_k^2))."""

    def __init__(self, latent_dim: int, components: int):
        super().__init__(latent_dim)
        self.logits = nn.Parameter(torch.zeros(components))
        # Spread the means so the components start distinct; unit-ish scales.
        self.locs = nn.Parameter(torch.randn(components, latent_dim))
        self.raw_scales = nn.Parameter(torch.full((components, latent_dim), math.log(math.e - 1)))

    def forward(self, encoder=None) -> Distribution:
        scales = F.softplus(self.raw_scales) + MIN_SCALE  # (K, L)
        return DiagonalGaussianMixture(self.logits, self.locs, scales)


class VampPrior(Prior):
    """p(z) = 1/K sum_k q(z | u_k): the aggregate posterior of K learnable pseudo-inputs."""

    def __init__(self, latent_dim: int, components: int, x_shape: tuple[int, ...],
                 init: torch.Tensor | None = None, level: float = 0.5):
        super().__init__(latent_dim)
        if init is None:  # one grey level, a little noise to tell the components apart
            init = level + 0.01 * torch.randn(components, *x_shape)
        self.pseudo_inputs = nn.Parameter(init.detach().clone().float())  # (K, *x_shape)

    def forward(self, encoder=None) -> Distribution:
        if encoder is None:
            raise ValueError("VampPrior needs the encoder to build p(z)")
        components = encoder(self.pseudo_inputs).base_dist  # Normal, (K, L)
        k = self.pseudo_inputs.shape[0]
        weights = torch.zeros(k, device=self.pseudo_inputs.device, dtype=components.loc.dtype)
        return DiagonalGaussianMixture(weights, components.loc, components.scale)


def build_prior(name: str, latent_dim: int, *, scales=None, components: int = 10,
                x_shape: tuple[int, ...] = (), init_data: torch.Tensor | None = None,
                pseudo_inputs: str | float = "data") -> Prior:
    """The prior registered as ``name`` (see :data:`vaekit.registry.PRIORS`)."""
    return PRIORS.build(name, latent_dim, scales=scales, components=components, x_shape=x_shape,
                        init_data=init_data, pseudo_inputs=pseudo_inputs)


def _normal(latent_dim):
    return StandardNormalPrior(latent_dim)


def _diag_normal(latent_dim, *, scales):
    return DiagonalNormalPrior(scales)


def _mixture(latent_dim, *, components):
    return MixturePrior(latent_dim, components)


def _vamp(latent_dim, *, components, x_shape, init_data, pseudo_inputs):
    """Pseudo-inputs from ``init_data`` (``pseudo_inputs`` = "data"), else at one grey level."""
    if pseudo_inputs != "data":
        return VampPrior(latent_dim, components, x_shape, level=float(pseudo_inputs))
    init = None
    if init_data is not None and len(init_data) > 0:
        idx = torch.randperm(len(init_data))[:components]
        init = init_data[idx]
        if len(init) < components:  # fewer examples than pseudo-inputs: repeat
            init = init.repeat((components + len(init) - 1) // len(init), *[1] * (init.dim() - 1))[:components]
    return VampPrior(latent_dim, components, x_shape, init)
