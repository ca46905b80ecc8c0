"""Objectives, all per-example tensors of shape ``(B,)``; nothing here holds state.

- :func:`elbo`: ELBO = E_q[log p(x|z)] - KL(q(z|x) || p(z)) with its two parts, and the
  training loss -(reconstruction - beta * KL) (beta-VAE; beta < 1 during KL warm-up).
  The expectation is a reparameterised Monte Carlo estimate z = mu + sigma * eps.
- :func:`iwae_bound`: L_K = E[log 1/K sum_k w_k], w_k = p(x, z_k) / q(z_k|x)
  (Burda et al. 2016), computed as ``logsumexp(log_w, 0) - log K``. L_1 is the ELBO and
  L_K rises towards log p(x) as K grows.
- :func:`importance_sampled`: the same estimator with large K for evaluation, chunked over
  samples so memory stays bounded, with running logsumexp (exact, not approximate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from .devices import to_device, wide_dtype
from .distributions import analytic_kl, kl_term


@dataclass
class Terms:
    """Per-example quantities of one objective evaluation, each of shape ``(B,)``."""

    loss: torch.Tensor  # what the optimiser minimises
    elbo: torch.Tensor  # reconstruction - kl
    reconstruction: torch.Tensor  # E_q[log p(x|z)]
    kl: torch.Tensor  # KL(q(z|x) || p(z))
    objective: torch.Tensor  # the bound being maximised (-loss at beta = 1)


def reparameterize(posterior, samples: int, noise: torch.Tensor | None = None) -> torch.Tensor:
    """z = mu + sigma * eps, (S, B, L), differentiable in mu and sigma. ``noise`` gives eps
    (standard normal, (S, B, L)); without it eps is drawn from torch's global generator.
    The trainer passes it so that an example's eps does not depend on how a batch is split
    across processes."""
    if noise is None:
        return posterior.rsample((samples,))
    draw = getattr(posterior, "rsample_from", None)  # the model contract's draw
    if draw is not None:
        return draw(noise)
    return posterior.mean + posterior.stddev * noise.to(posterior.mean.dtype)  # any loc-scale q


def elbo(model, x: torch.Tensor, beta: float = 1.0, samples: int = 1,
         noise: torch.Tensor | None = None) -> Terms:
    posterior = model.encode(x)
    prior = model.prior
    z = reparameterize(posterior, samples, noise)  # (S, B, L)
    reconstruction = model.decode(z).log_prob(x).mean(0)  # (S, B) -> (B,)
    kl = kl_term(posterior, prior, z)  # (B,)
    value = reconstruction - kl
    return Terms(loss=-(reconstruction - beta * kl), elbo=value,
                 reconstruction=reconstruction, kl=kl, objective=value)


@dataclass
class WeightTerms:
    """log w = log p(x|z) + log p(z) - log q(z|x) at z (S, B, L), with its terms, each (S, B)."""

    log_w: torch.Tensor
    log_lik: torch.Tensor  # log p(x|z)
    log_p: torch.Tensor  # log p(z)
    log_q: torch.Tensor  # log q(z|x)
    kl_levels: torch.Tensor | None = None  # (S, B, L): log q - log p level by level


def weight_terms(model, x: torch.Tensor, posterior, prior, z: torch.Tensor,
                 levels: bool = False) -> WeightTerms:
    """The terms of log w at z, each density computed once, so that the callers who also
    want a Monte Carlo KL (log q - log p) or a hierarchy's KL level by level take them from
    here instead of running the prior (a VampPrior's mixture, a hierarchy's level networks)
    and the posterior again. ``levels`` (for distributions with ``level_log_probs``) also
    keeps log q(z_l|.) - log p(z_l|.) per level; log p(z) and log q(z|x) are then the sums
    their ``log_prob`` computes, to the bit."""
    log_lik = model.decode(z).log_prob(x)  # (S, B)
    per = None
    if levels:
        q_levels, p_levels = posterior.level_log_probs(z), prior.level_log_probs(z)
        log_p, log_q = torch.stack(p_levels).sum(0), torch.stack(q_levels).sum(0)
        per = torch.stack([q - p for q, p in zip(q_levels, p_levels)], -1)
    else:
        log_p, log_q = prior.log_prob(z), posterior.log_prob(z)
    return WeightTerms(log_lik + log_p - log_q, log_lik, log_p, log_q, per)


def log_weights(model, x: torch.Tensor, posterior, prior, z: torch.Tensor):
    """log w = log p(x|z) + log p(z) - log q(z|x) for z of shape (S, B, L) -> (S, B),
    returned with its first term log p(x|z) (also (S, B))."""
    terms = weight_terms(model, x, posterior, prior, z)
    return terms.log_w, terms.log_lik


def iwae_bound(model, x: torch.Tensor, samples: int, beta: float = 1.0,
               noise: torch.Tensor | None = None) -> Terms:
    """The importance-weighted bound L_K, differentiable (for training with K > 1).

    During KL warm-up (``beta`` < 1) the loss tempers each weight's prior-over-posterior
    ratio, log w_k = log p(x|z_k) + beta (log p(z_k) - log q(z_k|x)), as the warm-up of
    importance-weighted ladder VAEs (Sonderby et al. 2016): at K = 1 that is the beta-ELBO
    with a sampled KL, at beta = 1 it is L_K. ``objective`` is always L_K itself. The
    reported ELBO uses the same K samples."""
    posterior = model.encode(x)
    prior = model.prior
    z = reparameterize(posterior, samples, noise)  # (K, B, L)
    terms = weight_terms(model, x, posterior, prior, z)
    log_w, log_lik = terms.log_w, terms.log_lik  # (K, B)

    def log_mean_w(lw):  # log 1/K sum_k exp(lw_k), (K, B) -> (B,)
        return torch.logsumexp(lw, 0) - math.log(samples)

    bound = log_mean_w(log_w)
    # beta = 1 skips the tempering so that the loss is L_K to the bit, as before the warm-up
    tempered = bound if beta == 1.0 else log_mean_w(log_lik + beta * (log_w - log_lik))
    reconstruction = log_lik.mean(0)
    kl = kl_term(posterior, prior, z, terms.log_q, terms.log_p)
    return Terms(loss=-tempered, elbo=(reconstruction - kl).detach(),
                 reconstruction=reconstruction.detach(), kl=kl.detach(), objective=bound)


def objective_for(samples: int) -> Callable[..., Terms]:
    """The training objective for K importance samples, called as
    ``objective(model, x, beta, noise)``: the ELBO at K = 1, L_K above."""
    if samples <= 1:
        return lambda model, x, beta=1.0, noise=None: elbo(model, x, beta, 1, noise)
    return lambda model, x, beta=1.0, noise=None: iwae_bound(model, x, samples, beta, noise)


@dataclass
class Estimates:
    log_px: torch.Tensor  # (B,) log 1/K sum_k w_k
    reconstruction: torch.Tensor  # (B,) mean over the K samples of log p(x|z_k)
    kl: torch.Tensor  # (B,) closed form, or mean over the K samples of log q - log p
    kl_levels: torch.Tensor | None = None  # (B, L) per level of a hierarchy (Monte Carlo)


@torch.no_grad()
def importance_sampled(model, x: torch.Tensor, samples: int, chunk: int,
                       generator: torch.Generator | None = None,
                       shared: bool = False) -> Estimates:
    """log p(x) ~= log 1/K sum_k p(x, z_k)/q(z_k|x), z_k ~ q(z|x), for a batch x of B examples.

    The K samples are drawn ``chunk`` at a time, so memory is that of ``chunk * B`` samples
    (:func:`vaekit.evaluation.bytes_per_sample` each), whatever K is. The logsumexp over chunks is
    accumulated exactly: logsumexp(a ++ b) = logaddexp(logsumexp(a), logsumexp(b)).
    The same samples give a K-sample estimate of the ELBO's two parts.

    With ``shared=True`` (and a ``generator``) every example uses the same standard normal
    eps_1..eps_K, z_k = mu(x) + sigma(x) eps_k: still an unbiased estimate for each example,
    and one that depends on that example alone, not on the batch it came in (what
    scikit-learn's ``score_samples`` contract asks).
    """
    posterior = model.encode(x)
    prior = model.prior
    closed_kl = analytic_kl(posterior, prior)
    running = torch.full(posterior.batch_shape, -math.inf, device=x.device, dtype=posterior.mean.dtype)
    lik_sum = torch.zeros(posterior.batch_shape, device=x.device, dtype=wide_dtype(x.device))
    kl_sum = torch.zeros_like(lik_sum)
    # a hierarchy's KL level by level: log q(z_l|x, z_{l+1}) - log p(z_l|z_{l+1}) at the samples
    by_level = len(getattr(model, "levels", ())) > 1 and hasattr(posterior, "level_log_probs")
    kl_levels = torch.zeros(*posterior.batch_shape, len(model.levels), device=x.device,
                            dtype=lik_sum.dtype) if by_level else None
    done = 0
    while done < samples:
        k = min(chunk, samples - done)
        if generator is None:
            z = posterior.sample((k,))  # (k, B, L)
        else:  # eps from the caller's (CPU) generator, the same on every device;
            # shared: one eps_k for every example
            shape = (k, 1 if shared else len(x), *model.noise_shape)
            z = reparameterize(posterior, k, to_device(torch.randn(shape, generator=generator), x.device))
        terms = weight_terms(model, x, posterior, prior, z, levels=by_level)  # each (k, B)
        running = torch.logaddexp(running, torch.logsumexp(terms.log_w, 0))
        lik_sum += terms.log_lik.to(lik_sum.dtype).sum(0)
        if by_level:
            per = terms.kl_levels  # (k, B, L)
            kl_levels += per.to(kl_levels.dtype).sum(0)
            if closed_kl is None:
                kl_sum += per.sum(-1).to(kl_sum.dtype).sum(0)
        elif closed_kl is None:
            kl_sum += (terms.log_q - terms.log_p).to(kl_sum.dtype).sum(0)
        done += k
    dtype = posterior.mean.dtype
    kl = closed_kl if closed_kl is not None else (kl_sum / samples).to(dtype)
    return Estimates(log_px=running - math.log(samples),
                     reconstruction=(lik_sum / samples).to(dtype), kl=kl,
                     kl_levels=(kl_levels / samples).to(dtype) if by_level else None)
