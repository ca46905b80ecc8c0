"""Objectives against exact answers on a linear-Gaussian model, where log p(x) is known.

Decoder x = W z + b + noise, noise ~ N(0, s^2 I), prior z ~ N(0, I):
    p(x) = N(x; b, W W^T + s^2 I),
and the exact posterior is Gaussian, so an encoder can be set to it or to something worse.
"""

import logging

import numpy as np
import torch
from scipy import stats
from scipy.special import logsumexp

from vaekit.likelihoods import GaussianLikelihood
from vaekit.priors import StandardNormalPrior
from vaekit.model import VAE
from vaekit.networks import MLPDecoder, MLPEncoder
from vaekit.objectives import elbo, importance_sampled, iwae_bound, log_weights

D, L, SIGMA = 5, 2, 0.5


def linear_gaussian_vae(exact_posterior: bool = False, seed: int = 0) -> VAE:
    g = torch.Generator().manual_seed(seed)
    enc = MLPEncoder((D,), L, hidden=[])  # a single linear layer
    dec = MLPDecoder((D,), L, hidden=[])
    # orthogonal columns make W^T W diagonal, so the exact posterior is a diagonal Gaussian
    q, _ = torch.linalg.qr(torch.randn(D, L, generator=g))
    W = q * torch.tensor([1.5, 0.7])
    b = torch.randn(D, generator=g) * 0.3
    with torch.no_grad():
        dec.body[0].weight.copy_(W)
        dec.body[0].bias.copy_(b)
        # exact posterior: Cov = (I + W^T W / s^2)^-1, mean = Cov W^T (x - b) / s^2
        cov = torch.linalg.inv(torch.eye(L) + W.T @ W / SIGMA**2)
        A = cov @ W.T / SIGMA**2
        std = torch.sqrt(torch.diag(cov))
        if not exact_posterior:  # a deliberately imperfect but reasonable q
            A = A * 0.8
            std = std * 1.5
        enc.body[0].weight.zero_()
        enc.body[0].bias.zero_()
        enc.body[0].weight[:L] = A
        enc.body[0].bias[:L] = -A @ b
        raw = torch.log(torch.expm1(std - 1e-5))  # softplus^-1
        enc.body[0].bias[L:] = raw
    return VAE(enc, dec, StandardNormalPrior(L), GaussianLikelihood(SIGMA), (D,))


def exact_log_px(model: VAE, x: torch.Tensor) -> np.ndarray:
    W = model.decoder.body[0].weight.detach().double().numpy()
    b = model.decoder.body[0].bias.detach().double().numpy()
    return stats.multivariate_normal(b, W @ W.T + SIGMA**2 * np.eye(D)).logpdf(x.double().numpy())


def data(n: int = 64, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    model = linear_gaussian_vae()
    z = torch.randn(n, L, generator=g)
    W, b = model.decoder.body[0].weight.detach(), model.decoder.body[0].bias.detach()
    return z @ W.T + b + SIGMA * torch.randn(n, D, generator=g)


def test_importance_sampling_converges_to_exact_log_likelihood():
    model, x = linear_gaussian_vae(), data()
    exact = exact_log_px(model, x)
    errors = []
    for k in (10, 5000):
        est = importance_sampled(model, x, k, chunk=777).log_px.double().numpy()
        errors.append(np.abs(est - exact).mean())
    assert errors[1] < 0.02, errors
    assert errors[1] < errors[0]


def test_with_exact_posterior_every_weight_equals_p_x():
    model, x = linear_gaussian_vae(exact_posterior=True), data()
    est = importance_sampled(model, x, 3, chunk=2).log_px.double().numpy()
    np.testing.assert_allclose(est, exact_log_px(model, x), atol=2e-3)


def test_bounds_are_ordered_l1_le_lk_le_log_px_on_average():
    model, x = linear_gaussian_vae(), data(256)
    exact = float(np.mean(exact_log_px(model, x)))
    with torch.no_grad():
        l1 = float(torch.stack([elbo(model, x).elbo.mean() for _ in range(50)]).mean())
        l10 = float(torch.stack([iwae_bound(model, x, 10).objective.mean() for _ in range(50)]).mean())
        l100 = float(torch.stack([iwae_bound(model, x, 100).objective.mean() for _ in range(10)]).mean())
    assert l1 < l10 < l100 <= exact + 0.01, (l1, l10, l100, exact)
    assert exact - l1 > 0.05  # the imperfect q leaves a real gap, so the test has teeth


def test_iwae_with_one_sample_is_the_elbo_in_expectation_and_pathwise():
    model, x = linear_gaussian_vae(), data(32)
    with torch.no_grad():
        torch.manual_seed(5)
        single = iwae_bound(model, x, 1).objective
        torch.manual_seed(5)  # the same sample z through the explicit formula
        posterior, prior = model.encode(x), model.prior
        z = posterior.rsample((1,))
        lw, _ = log_weights(model, x, posterior, prior, z)
        torch.testing.assert_close(single, lw[0])
        many = torch.stack([iwae_bound(model, x, 1).objective for _ in range(4000)]).mean(0)
        analytic = elbo(model, x, samples=4000).elbo  # closed-form KL
    torch.testing.assert_close(many, analytic, atol=0.05, rtol=0.01)


def test_chunking_does_not_change_the_estimate():
    model, x = linear_gaussian_vae(), data(16)
    torch.manual_seed(9)
    a = importance_sampled(model, x, 100, chunk=100).log_px
    torch.manual_seed(9)
    b = importance_sampled(model, x, 100, chunk=7).log_px
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-6)


def test_gradients_reach_the_encoder_through_the_reparameterised_sample():
    model, x = linear_gaussian_vae(), data(16)
    terms = elbo(model, x)
    # the reconstruction term depends on the encoder only through z = mu + sigma * eps
    terms.reconstruction.mean().backward()
    grad = model.encoder.body[0].weight.grad
    assert grad is not None and float(grad[:L].abs().sum()) > 0  # through mu
    assert float(model.encoder.body[0].bias.grad[L:].abs().sum()) > 0  # through sigma


def test_beta_weights_only_the_kl_in_the_loss():
    model, x = linear_gaussian_vae(), data(8)
    torch.manual_seed(0)
    t1 = elbo(model, x, beta=1.0)
    torch.manual_seed(0)
    t0 = elbo(model, x, beta=0.25)
    torch.testing.assert_close(t0.loss, -(t1.reconstruction - 0.25 * t1.kl))
    torch.testing.assert_close(t0.elbo, t1.elbo)


def test_warm_up_tempers_each_importance_weight_and_leaves_the_bound_reported():
    """With K > 1 the warm-up's beta multiplies log p(z_k) - log q(z_k|x) inside every
    weight; the densities here are scipy's, from the model's own weights."""
    model, x = linear_gaussian_vae(), data(6)
    K, beta = 7, 0.3
    noise = torch.randn(K, len(x), L, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        warm = iwae_bound(model, x, K, beta=beta, noise=noise)
        full = iwae_bound(model, x, K, beta=1.0, noise=noise)
        single = iwae_bound(model, x, 1, beta=beta, noise=noise[:1])
        post = model.encode(x)
        mu, sd = post.mean.double().numpy(), post.stddev.double().numpy()
    W = model.decoder.body[0].weight.detach().double().numpy()
    b = model.decoder.body[0].bias.detach().double().numpy()
    z = mu + sd * noise.double().numpy()  # (K, B, L)
    xs = x.double().numpy()
    lik = stats.norm(z @ W.T + b, SIGMA).logpdf(xs).sum(-1)
    ratio = stats.norm(0, 1).logpdf(z).sum(-1) - stats.norm(mu, sd).logpdf(z).sum(-1)
    expect = lambda lw: logsumexp(lw, 0) - np.log(lw.shape[0])  # noqa: E731
    np.testing.assert_allclose(-warm.loss.double().numpy(), expect(lik + beta * ratio), atol=1e-4)
    np.testing.assert_allclose(warm.objective.double().numpy(), expect(lik + ratio), atol=1e-4)
    torch.testing.assert_close(warm.objective, full.objective)  # what validation reads
    torch.testing.assert_close(full.loss, -full.objective)
    # at K = 1 the tempered weight is the beta-ELBO with a sampled KL
    np.testing.assert_allclose(-single.loss.double().numpy(), lik[0] + beta * ratio[0], atol=1e-4)
    assert float((warm.loss - full.loss).abs().max()) > 0.1  # beta changes what is trained


def test_evaluation_with_progress_says_what_it_computes_and_gives_the_same_numbers(caplog):
    from vaekit.evaluation import evaluate

    model, x = linear_gaussian_vae(), data(40)
    quiet = evaluate(model, x, 200, seed=3)
    with caplog.at_level(logging.INFO, logger="vaekit"):
        shown = evaluate(model, x, 200, seed=3, progress=True)
    # a model built without a data spec does not know what its examples are
    assert "K = 200 importance samples on 40 examples" in caplog.text
    assert shown["log_px"] == quiet["log_px"] and shown["elbo"] == quiet["elbo"]
    # and the estimate is the exact marginal likelihood of this linear-Gaussian model
    assert abs(shown["log_px"] - exact_log_px(model, x).mean()) < 0.05
