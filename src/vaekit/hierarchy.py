"""Hierarchical VAEs: L Gaussian levels z_1 (next to the data) ... z_L (the top).

Generative model p(z_L) p(z_{L-1}|z_L) ... p(z_1|z_2) p(x|z_1, ..., z_L), inference model
q(z_L|x) q(z_{L-1}|x, z_L) ... q(z_1|x, z_2): with two levels, the model of Tomczak &
Welling (2018, VampPrior paper, section 3.2). p(z_L) is any of vaekit's priors (the
VampPrior's pseudo-inputs go through q(z_L|.)); every conditional is a diagonal Gaussian
whose location and pre-softplus scale an MLP outputs; the decoder reads all levels.

The model fills the same contract as the one-level :class:`~vaekit.model.VAE`: ``encode(x)``
is one distribution over the whole latent vector z = (z_1, ..., z_L) concatenated from the
data up (event shape ``(sum of sizes,)``), ``prior`` likewise, ``decode(z)`` reads the whole
vector, and ``rsample_from(eps)`` turns standard normal noise of that shape into an ancestral
draw, top level first. ``mean`` is the ancestral mean: the top level's posterior mean, then
each lower level's posterior mean given the means above it (deterministic; the default
embedding). KL(q || p) has no closed form here and is estimated by Monte Carlo.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Distribution, constraints

from .config import latent_levels
from .distributions import MIN_SCALE, DiagonalNormal, gaussian_from
from .likelihoods import Likelihood
from .model import VAE, top_prior
from .networks import Features, input_parts, mlp
from .priors import Prior


class _LevelNet(nn.Module):
    """An MLP whose output is a diagonal Gaussian over one level: (..., in) -> (..., 2, size)."""

    def __init__(self, in_dim: int | list[int], size: int, hidden, activation: str, gated: bool,
                 min_scale: float):
        super().__init__()
        self.size = size
        self.min_scale = min_scale
        self.body = mlp(in_dim, list(hidden), 2 * size, activation, gated)

    def forward(self, h: torch.Tensor) -> DiagonalNormal:
        return gaussian_from(self.body(h).unflatten(-1, (2, self.size)), self.min_scale)


class _Levels(Distribution):
    """A distribution over the concatenation (z_1, ..., z_L) built top-down from the top
    level's distribution and the conditionals of each lower level given the one above.
    Subclasses say what ``top`` is and what ``conditional(l, z_above)`` is."""

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, sizes: list[int], top: Distribution, batch_shape):
        self.sizes = list(sizes)
        self.top = top
        super().__init__(torch.Size(batch_shape), torch.Size([sum(sizes)]), validate_args=False)

    def conditional(self, level: int, above: torch.Tensor) -> DiagonalNormal:
        raise NotImplementedError

    def split(self, z: torch.Tensor) -> list[torch.Tensor]:
        """z (..., sum) -> [z_1, ..., z_L] (data up)."""
        return list(z.split(self.sizes, -1))

    def conditionals_at(self, z: torch.Tensor, parts: list[torch.Tensor]) -> list:
        """[p(z_1|z_2), ..., p(z_{L-1}|z_L)] at z (split into ``parts``)."""
        return [self.conditional(l, parts[l + 1]) for l in range(len(parts) - 1)]

    def level_log_probs(self, z: torch.Tensor) -> list[torch.Tensor]:
        """[log p(z_1|z_2), ..., log p(z_L)] at z, each of shape z.shape[:-1]."""
        parts = self.split(z)
        out = [c.log_prob(parts[l]) for l, c in enumerate(self.conditionals_at(z, parts))]
        return out + [self.top.log_prob(parts[-1])]

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return torch.stack(self.level_log_probs(z)).sum(0)

    def _down(self, z_top: torch.Tensor, draw) -> torch.Tensor:
        """Ancestral pass: ``draw(level, distribution)`` gives each lower level's value."""
        zs = [z_top]
        for level in reversed(range(len(self.sizes) - 1)):
            zs.insert(0, draw(level, self.conditional(level, zs[0])))
        return torch.cat(zs, -1)


class HierarchicalPosterior(_Levels):
    """q(z|x) = q(z_L|x) prod_l q(z_l|x, z_{l+1}), for a batch of x."""

    def __init__(self, model: "HierarchicalVAE", x: torch.Tensor):
        self.model = model
        self.features = model.features(model.shaped(x))  # (B, F)
        top = model.q_nets[-1](self.features)
        super().__init__(model.levels, top, top.batch_shape)

    def conditional(self, level, above):
        lead = torch.broadcast_shapes(above.shape[:-1], self.features.shape[:-1])
        f = self.features.expand(*lead, self.features.shape[-1])
        above = above.expand(*lead, above.shape[-1])
        return self.model.q_nets[level](torch.cat([f, above.to(f.dtype)], -1))

    def rsample_from(self, eps: torch.Tensor) -> torch.Tensor:
        parts = self.split(eps)
        drawn = {}

        def draw(level, q):
            drawn[level] = q
            return q.rsample_from(parts[level])

        z = self._down(self.top.rsample_from(parts[-1]), draw)
        # log q(z|x) at the z just drawn needs the same conditionals q(z_l|x, z_{l+1}): keep
        # them (for this z, unchanged) instead of running the level networks again, which
        # was a fifth of a hierarchy's evaluation time (benchmarks/likelihood.py --parts)
        self._drawn = (z, z._version, drawn)
        return z

    def conditionals_at(self, z, parts):
        cached = getattr(self, "_drawn", None)
        if cached is None or cached[0] is not z or cached[1] != z._version:
            return super().conditionals_at(z, parts)
        return [cached[2][l] for l in range(len(parts) - 1)]

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = torch.Size(sample_shape) + self.batch_shape + self.event_shape
        loc = self.top.mean
        return self.rsample_from(torch.randn(shape, device=loc.device, dtype=loc.dtype))

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    @property
    def mean(self) -> torch.Tensor:
        """The ancestral mean: E_q[z_L|x], then E_q[z_l|x, z_{l+1}] at the means above."""
        if not hasattr(self, "_mean"):
            self._mean = self._down(self.top.mean, lambda l, q: q.mean)
        return self._mean


class HierarchicalPrior(_Levels):
    """p(z) = p(z_L) prod_l p(z_l|z_{l+1}); p(z_L) is the model's prior module."""

    def __init__(self, model: "HierarchicalVAE"):
        self.model = model
        super().__init__(model.levels, model.prior_module(model.encode_top), ())

    def conditional(self, level, above):
        return self.model.p_nets[level](above)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            return self._down(self.top.sample(sample_shape), lambda l, p: p.sample())

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        return self._down(self.top.rsample(sample_shape), lambda l, p: p.rsample())


class HierarchicalVAE(VAE):
    """A VAE with ``levels`` = [size of z_1, ..., size of z_L], L >= 2 (see the module)."""

    def __init__(self, features: Features, levels: list[int], decoder: nn.Module, prior: Prior,
                 likelihood: Likelihood, x_shape, hidden, activation: str = "relu",
                 gated: bool = False, separate_inputs: bool = False,
                 min_scale: float = MIN_SCALE):
        if len(levels) < 2:
            raise ValueError(f"a hierarchical VAE needs at least two levels, got {levels}")
        if prior.latent_dim != levels[-1]:
            raise ValueError(f"the prior is over {prior.latent_dim} dimensions, the top level "
                             f"has {levels[-1]}")
        # q(z_l|x, z_{l+1}) for l < L (reading x's features and z_{l+1} through one first
        # layer, or one each with separate_inputs), and q(z_L|x) last
        q_nets = [_LevelNet(input_parts([features.size, levels[l + 1]], separate_inputs),
                            levels[l], hidden, activation, gated, min_scale)
                  for l in range(len(levels) - 1)]
        q_nets.append(_LevelNet(features.size, levels[-1], hidden, activation, gated, min_scale))
        encoder = nn.ModuleDict({"features": features, "levels": nn.ModuleList(q_nets)})
        super().__init__(encoder, decoder, prior, likelihood, x_shape, min_scale)
        self.levels = list(levels)
        self.latent_dim = sum(levels)
        # p(z_l|z_{l+1}) for l < L
        self.p_nets = nn.ModuleList(_LevelNet(levels[l + 1], levels[l], hidden, activation, gated,
                                              min_scale) for l in range(len(levels) - 1))

    @property
    def features(self) -> Features:
        return self.encoder["features"]

    @property
    def q_nets(self) -> nn.ModuleList:
        return self.encoder["levels"]

    def encode_top(self, x: torch.Tensor) -> DiagonalNormal:
        """q(z_L|x) alone (what a VampPrior pushes its pseudo-inputs through)."""
        return self.q_nets[-1](self.features(self.shaped(x)))

    def encode(self, x: torch.Tensor) -> HierarchicalPosterior:
        return HierarchicalPosterior(self, x)

    @property
    def prior(self) -> HierarchicalPrior:
        return HierarchicalPrior(self)


def _build(m, x_shape, lik, arch, *, init_data) -> HierarchicalVAE:
    levels = latent_levels(m.latent_dim)
    decoder = arch.decoder(m, x_shape, input_parts(levels, m.separate_inputs), lik.params_per_dim)
    prior = top_prior(m, levels[-1], x_shape, init_data)
    return HierarchicalVAE(arch.features(m, x_shape), levels, decoder, prior, lik, x_shape,
                           m.hidden, m.activation, m.gated, m.separate_inputs, m.min_scale)
