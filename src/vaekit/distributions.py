"""Priors p(z), likelihoods p(x|z) and the KL term, as ``torch.distributions`` objects.

Priors (modules whose ``forward`` returns a distribution with event shape ``(L,)``):

- :class:`StandardNormalPrior` N(0, I) and :class:`DiagonalNormalPrior` N(0, diag(s^2));
- :class:`MixturePrior`, a learnable mixture of diagonal Gaussians;
- :class:`VampPrior` (Tomczak & Welling 2018): p(z) = 1/K sum_k q(z | u_k) with learnable
  pseudo-inputs u_k pushed through the encoder.

Likelihoods (modules that turn decoder outputs into a distribution over x whose
``log_prob`` sums over the event dimensions, one value per example):

- :class:`BernoulliLikelihood` from logits (``binary_cross_entropy_with_logits`` inside
  ``torch.distributions.Bernoulli``: stable for any logit); grey levels in [0, 1] are
  accepted as the usual cross-entropy;
- :class:`GaussianLikelihood` N(f(z), sigma^2 I) with sigma a hyper-parameter;
- :class:`LearnedGaussianLikelihood`, sigma output by the decoder (floored at min_sigma).

Every log-density includes its normalising constant (``Normal.log_prob`` has the
-log(sigma sqrt(2 pi)) term), so log p(x) is in nats and comparable with published numbers.

The KL term is closed-form through ``kl_divergence`` wherever a pair is registered
(Normal/Normal), and a Monte Carlo estimate log q(z|x) - log p(z) at the sample otherwise
(mixture and VampPrior).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .devices import wide_dtype
from .registry import LIKELIHOODS, PRIORS
from torch.distributions import (
    Bernoulli,
    Categorical,
    Distribution,
    Independent,
    MixtureSameFamily,
    Normal,
    kl_divergence,
)

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


# --------------------------------------------------------------------------- priors


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


# ---------------------------------------------------------------------- likelihoods


class Likelihood(nn.Module):
    """Turns decoder outputs ``(..., P, *x_shape)`` into p(x|z) with event shape x_shape."""

    #: decoder outputs per data dimension (1: mean or logits; 2: mean and scale)
    params_per_dim = 1
    name = ""

    def forward(self, params: torch.Tensor, event_dims: int) -> Distribution:
        raise NotImplementedError

    def check_data(self, x: torch.Tensor, what: str) -> None:
        """Raise ValueError if ``x`` is outside this likelihood's support."""


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


def bernoulli_log_lik(logits: torch.Tensor, x: torch.Tensor, event_dims: int = 1) -> torch.Tensor:
    """log Bernoulli(x | sigmoid(l)) = sum over the event dims of x l - softplus(l): stable for
    any logit, and the usual cross-entropy for grey levels x in [0, 1]."""
    return (x * logits).sub_(F.softplus(logits)).sum(tuple(range(-event_dims, 0)))


def bernoulli_log_lik_grad(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """d/dl of :func:`bernoulli_log_lik`, negated: sigmoid(l) - x (what a loss -log p needs)."""
    return torch.sigmoid(logits).sub_(x)


def standard_normal_kl(mu: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag s^2) || N(0, I)) = 1/2 sum (s^2 + mu^2 - 2 log s - 1), over the last dim.
    (The autograd path gets the same quantity from ``torch.distributions.kl_divergence``.)"""
    kl = torch.addcmul(scale.square(), mu, mu).sub_(scale.log(), alpha=2.0)
    return kl.sum(-1).sub_(mu.shape[-1]).mul_(0.5)


def standard_normal_kl_grad(mu: torch.Tensor, scale: torch.Tensor):
    """(d/dmu, d/ds) of :func:`standard_normal_kl`: (mu, s - 1/s)."""
    return mu, torch.sub(scale, scale.reciprocal())


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
