"""Diagonal Gaussians over z and the KL term, as ``torch.distributions`` objects; the
priors p(z) are in :mod:`vaekit.priors`, the likelihoods p(x|z) in :mod:`vaekit.likelihoods`.

- :class:`DiagonalNormal` N(loc, diag(scale^2)) with the reparameterised draw from noise the
  caller gives (every posterior of the model contract), :func:`gaussian_from` a network's
  output as one (scale = softplus(raw) + min_scale);
- the KL term: closed form through ``kl_divergence`` wherever a pair is registered
  (Normal/Normal), and a Monte Carlo estimate log q(z|x) - log p(z) at the sample otherwise
  (mixture and VampPrior priors, hierarchies);
- the formulas that both the autograd path and the hand-derived step (``fused.py``) call,
  with their gradients (the posterior's scale, the KL against N(0, I)).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.distributions import Distribution, Independent, Normal, kl_divergence

# Default scale floor of every diagonal Gaussian the networks output (model.min_scale): keeps
# log-densities finite.
MIN_SCALE = 1e-5


def full_precision(t: torch.Tensor) -> torch.Tensor:
    """Half-precision network outputs (under bf16/fp16 autocast) as float32; float32 and
    float64 pass unchanged. Every log-density is computed at least in float32."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


class DiagonalNormal(Independent):
    """N(loc, diag(scale^2)) over the last ``event_dims`` dimensions, with the
    reparameterised draw from caller-given standard normal noise that every posterior of
    the model contract has (:meth:`rsample_from`)."""

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, event_dims: int = 1):
        super().__init__(Normal(loc, scale, validate_args=False), event_dims, validate_args=False)

    def rsample_from(self, eps: torch.Tensor) -> torch.Tensor:
        """z = mu + sigma * eps for standard normal ``eps`` of shape (..., *batch, *event)."""
        return self.mean + self.stddev * eps.to(self.mean.dtype)


def diagonal_normal(loc: torch.Tensor, scale: torch.Tensor, event_dims: int = 1) -> DiagonalNormal:
    return DiagonalNormal(loc, scale, event_dims)


def gaussian_from(params: torch.Tensor, min_scale: float = MIN_SCALE) -> DiagonalNormal:
    """A network's output (..., 2, L), location and pre-softplus scale, as the diagonal
    Gaussian N(loc, diag(s^2)) with s = softplus(raw) + min_scale, at least in float32."""
    loc, raw_scale = full_precision(params).unbind(-2)
    return diagonal_normal(loc, positive_scale(raw_scale, min_scale))


# ------------------------------------------------ formulas with their gradients
# The autograd path and the hand-derived training step (fused.py) both call these.


def positive_scale(raw: torch.Tensor, min_scale: float = MIN_SCALE) -> torch.Tensor:
    """A network's pre-softplus output as a Gaussian scale: softplus(raw) + min_scale."""
    return F.softplus(raw) + min_scale


def positive_scale_backward(grad: torch.Tensor, raw: torch.Tensor, out: torch.Tensor | None = None):
    """d loss/d raw from d loss/d scale: times softplus'(raw) = sigmoid(raw) (written into
    ``out`` when given)."""
    if out is None:
        return torch.ops.aten.softplus_backward(grad, raw, 1.0, 20.0)
    return torch.ops.aten.softplus_backward.grad_input(grad, raw, 1.0, 20.0, grad_input=out)


def standard_normal_kl(mu: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag s^2) || N(0, I)) = 1/2 sum (s^2 + mu^2 - 2 log s - 1), over the last dim.
    (The autograd path gets the same quantity from ``torch.distributions.kl_divergence``.)"""
    kl = torch.addcmul(scale.square(), mu, mu).sub_(scale.log(), alpha=2.0)
    return kl.sum(-1).sub_(mu.shape[-1]).mul_(0.5)


def standard_normal_kl_grad(mu: torch.Tensor, scale: torch.Tensor):
    """(d/dmu, d/ds) of :func:`standard_normal_kl`: (mu, s - 1/s)."""
    return mu, torch.sub(scale, scale.reciprocal())


# ------------------------------------------------------------------------------ KL


def analytic_kl(posterior: Distribution, prior: Distribution) -> torch.Tensor | None:
    """KL(q || p) in closed form, shape = posterior batch shape; None if no formula exists."""
    try:
        return kl_divergence(posterior, prior)
    except NotImplementedError:
        return None


def kl_term(posterior: Distribution, prior: Distribution, z: torch.Tensor,
            log_q: torch.Tensor | None = None, log_p: torch.Tensor | None = None) -> torch.Tensor:
    """KL(q(z|x) || p(z)) per example: closed form where registered, else a Monte Carlo
    estimate averaged over the samples ``z`` of shape ``(S, B, L)`` -> ``(B,)``, from
    ``log_q`` = log q(z|x) and ``log_p`` = log p(z) at ``z`` when the caller has them."""
    kl = analytic_kl(posterior, prior)
    if kl is not None:
        return kl
    if log_q is None or log_p is None:
        log_q, log_p = posterior.log_prob(z), prior.log_prob(z)
    return (log_q - log_p).mean(0)  # (S, B) -> (B,)
