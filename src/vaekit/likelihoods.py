"""Likelihoods p(x|z): modules that turn decoder outputs into a distribution over x whose
``log_prob`` sums over the event dimensions, one value per example.

- :class:`BernoulliLikelihood` from logits (one fused pass, stable for any logit); grey
  levels in [0, 1] are accepted as the usual cross-entropy;
- :class:`GaussianLikelihood` N(f(z), sigma^2 I) with sigma a hyper-parameter;
- :class:`LearnedGaussianLikelihood`, sigma output by the decoder (floored at min_sigma).

Every log-density includes its normalising constant (``Normal.log_prob`` has the
-log(sigma sqrt(2 pi)) term), so log p(x) is in nats and comparable with published numbers.
A new likelihood is a module here, a builder that declares the arguments it takes, and one
line in :data:`vaekit.registry.LIKELIHOODS`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Bernoulli, Distribution, Independent, Normal

from .distributions import full_precision
from .registry import LIKELIHOODS


class Likelihood(nn.Module):
    """Turns decoder outputs ``(..., P, *x_shape)`` into p(x|z) with event shape x_shape."""

    #: decoder outputs per data dimension (1: mean or logits; 2: mean and scale)
    params_per_dim = 1
    name = ""

    def forward(self, params: torch.Tensor, event_dims: int) -> Distribution:
        raise NotImplementedError

    def check_data(self, x: torch.Tensor, what: str) -> None:
        """Raise ValueError if ``x`` is outside this likelihood's support."""


# ------------------------------------------------ the Bernoulli's formula, with its gradient
# The autograd path and the hand-derived training step (fused.py) both call these.


def bernoulli_log_lik(logits: torch.Tensor, x: torch.Tensor, event_dims: int = 1) -> torch.Tensor:
    """log Bernoulli(x | sigmoid(l)) = sum over the event dims of x l - softplus(l): stable for
    any logit, and the usual cross-entropy for grey levels x in [0, 1]."""
    return (x * logits).sub_(F.softplus(logits)).sum(tuple(range(-event_dims, 0)))


def bernoulli_log_lik_grad(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """d/dl of :func:`bernoulli_log_lik`, negated: sigmoid(l) - x (what a loss -log p needs)."""
    return torch.sigmoid(logits).sub_(x)


class _BernoulliLogLik(torch.autograd.Function):
    """:func:`bernoulli_log_lik` with its one-pass backward, d/dl = x - sigmoid(l)."""

    @staticmethod
    def forward(ctx, logits, x, event_dims: int):
        ctx.save_for_backward(logits, x)
        ctx.event_dims = event_dims
        return bernoulli_log_lik(logits, x, event_dims)  # (..., *x_shape) -> (...)

    @staticmethod
    def backward(ctx, grad):
        logits, x = ctx.saved_tensors
        g = grad.reshape(*grad.shape, *[1] * ctx.event_dims)
        grad_logits = grad_x = None
        if ctx.needs_input_grad[0]:
            grad_logits = bernoulli_log_lik_grad(logits, x).mul_(-g)
        if ctx.needs_input_grad[1]:
            grad_x = (logits * g).sum_to_size(x.shape)
        return grad_logits, grad_x, None


class BernoulliImage(Independent):
    """``Independent(Bernoulli(logits), event_dims)`` whose ``log_prob`` is one fused pass
    (:class:`_BernoulliLogLik`) instead of binary_cross_entropy_with_logits' several."""

    def __init__(self, logits: torch.Tensor, event_dims: int):
        super().__init__(Bernoulli(logits=logits, validate_args=False), event_dims,
                         validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        logits = self.base_dist.logits
        return _BernoulliLogLik.apply(logits, value.to(logits.dtype), self.reinterpreted_batch_ndims)


class BernoulliLikelihood(Likelihood):
    name = "bernoulli"

    def forward(self, params, event_dims):
        logits = full_precision(params.squeeze(-1 - event_dims))  # P = 1: a view, free backward
        return BernoulliImage(logits, event_dims)

    def check_data(self, x, what):
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"the Bernoulli likelihood needs values in [0, 1], but {what} has values in "
                f"[{lo:g}, {hi:g}]; rescale the data or choose a Gaussian likelihood "
                "(--set model.likelihood=\"gaussian\")"
            )


class GaussianLikelihood(Likelihood):
    name = "gaussian"

    def __init__(self, sigma: float):
        super().__init__()
        self.sigma = float(sigma)

    def forward(self, params, event_dims):
        loc = full_precision(params.squeeze(-1 - event_dims))
        return Independent(Normal(loc, self.sigma, validate_args=False), event_dims,
                           validate_args=False)


class LearnedGaussianLikelihood(Likelihood):
    name = "gaussian-learned"
    params_per_dim = 2

    def __init__(self, min_sigma: float):
        super().__init__()
        self.min_sigma = float(min_sigma)

    def forward(self, params, event_dims):
        dim = -1 - event_dims
        loc = full_precision(params.select(dim, 0))
        scale = F.softplus(full_precision(params.select(dim, 1))) + self.min_sigma
        return Independent(Normal(loc, scale, validate_args=False), event_dims,
                           validate_args=False)


def build_likelihood(name: str, *, sigma: float = 0.1, min_sigma: float = 1e-3) -> Likelihood:
    """The likelihood registered as ``name`` (see :data:`vaekit.registry.LIKELIHOODS`)."""
    return LIKELIHOODS.build(name, sigma=sigma, min_sigma=min_sigma)


def _bernoulli() -> Likelihood:
    return BernoulliLikelihood()


def _gaussian(*, sigma: float) -> Likelihood:
    return GaussianLikelihood(sigma)


def _gaussian_learned(*, min_sigma: float) -> Likelihood:
    return LearnedGaussianLikelihood(min_sigma)
