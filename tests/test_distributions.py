"""Priors, likelihoods and KL against independent references (scipy, Monte Carlo)."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from vaekit.distributions import analytic_kl, diagonal_normal, kl_term
from vaekit.likelihoods import BernoulliLikelihood, GaussianLikelihood, LearnedGaussianLikelihood
from vaekit.priors import DiagonalNormalPrior, MixturePrior, StandardNormalPrior, VampPrior


def test_closed_form_kl_matches_monte_carlo():
    # the reference is scipy's densities of the scales the prior was given, not the prior's
    # own distribution: a prior that built the wrong Gaussian (variances for scales, say)
    # would agree with itself in both the closed form and a Monte Carlo of its own log_prob
    torch.manual_seed(1)
    loc, scale = torch.randn(5, 3), torch.rand(5, 3) + 0.3
    q = diagonal_normal(loc, scale)
    for prior, scales in ((StandardNormalPrior(3)(), [1.0, 1.0, 1.0]),
                          (DiagonalNormalPrior([0.5, 2.0, 1.3])(), [0.5, 2.0, 1.3])):
        exact = analytic_kl(q, prior)
        z = q.sample((200_000,)).double()
        log_p = stats.norm(0.0, np.array(scales)).logpdf(z.numpy()).sum(-1)
        log_q = stats.norm(loc.double().numpy(), scale.double().numpy()).logpdf(z.numpy()).sum(-1)
        mc = torch.from_numpy((log_q - log_p).mean(0)).float()
        assert exact.shape == (5,)
        torch.testing.assert_close(exact, mc, atol=0.02, rtol=0.01)
        torch.testing.assert_close(prior.log_prob(z[:100].float()).double(),
                                   torch.from_numpy(log_p[:100]), atol=1e-4, rtol=1e-5)


def test_closed_form_kl_matches_textbook_formula():
    loc, scale = torch.tensor([[0.3, -1.0]]), torch.tensor([[0.5, 2.0]])
    kl = analytic_kl(diagonal_normal(loc, scale), StandardNormalPrior(2)())
    # KL(N(m, s^2) || N(0, 1)) = 0.5 * sum(s^2 + m^2 - 1 - log s^2)
    ref = 0.5 * (scale**2 + loc**2 - 1 - torch.log(scale**2)).sum()
    torch.testing.assert_close(kl, ref.reshape(1))


def _kl_by_quadrature(q_loc, q_scale, log_p, half_width=8.0, n=801) -> float:
    """KL(q || p) for a 2-D diagonal Gaussian q, by the trapezoid rule on a fine grid over
    +-8 standard deviations: an independent reference for the Monte Carlo estimate."""
    axes = [np.linspace(m - half_width * s, m + half_width * s, n) for m, s in zip(q_loc, q_scale)]
    zz = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2)
    log_q = stats.norm(q_loc, q_scale).logpdf(zz).sum(-1)
    lp = log_p(torch.from_numpy(zz)).double().numpy()
    integrand = (np.exp(log_q) * (log_q - lp)).reshape(n, n)
    trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 names it trapz
    return float(trapezoid(trapezoid(integrand, axes[1], axis=1), axes[0]))


@pytest.mark.parametrize("kind", ["mixture", "vamp"])
def test_mixture_and_vamp_kl_fall_back_to_unbiased_monte_carlo(kind):
    """The one-sample estimate training uses, averaged over fresh draws, agrees with KL(q||p)
    computed by quadrature, within its standard error: an unbiased estimator of the right
    quantity (a biased one, e.g. log q - log p at the mean, misses by far more)."""
    torch.manual_seed(2)
    if kind == "mixture":
        prior = MixturePrior(2, 4)()
    else:
        vamp, lin = VampPrior(2, 5, (3,)), torch.nn.Linear(3, 4)

        def encoder(x):
            loc, raw = lin(x).chunk(2, -1)
            return diagonal_normal(loc, torch.nn.functional.softplus(raw) + 0.2)

        prior = vamp(encoder)
    loc, scale = torch.tensor([[0.3, -0.8]]), torch.tensor([[0.7, 1.2]])
    q = diagonal_normal(loc, scale)
    assert analytic_kl(q, prior) is None
    with torch.no_grad():
        draws = torch.stack([kl_term(q, prior, q.rsample((1,))) for _ in range(20_000)])[:, 0].double()
        ref = _kl_by_quadrature(loc[0].numpy(), scale[0].numpy(), lambda z: prior.log_prob(z.float()))
        at_mean = float(q.log_prob(loc) - prior.log_prob(loc))
    se = float(draws.std() / math.sqrt(len(draws)))
    assert abs(float(draws.mean()) - ref) < 4 * se + 1e-3
    assert abs(at_mean - ref) > 10 * se  # the test can tell a biased estimator from this one


def test_mixture_prior_log_prob_matches_manual_logsumexp():
    prior_mod = MixturePrior(3, 5)
    p = prior_mod()
    z = torch.randn(7, 3)
    weights = torch.log_softmax(prior_mod.logits, 0)
    scales = torch.nn.functional.softplus(prior_mod.raw_scales) + 1e-5
    comp = np.stack([stats.multivariate_normal(prior_mod.locs[k].detach().numpy(),
                                               np.diag(scales[k].detach().numpy() ** 2)).logpdf(z.numpy())
                     for k in range(5)], 1)
    ref = torch.logsumexp(torch.from_numpy(comp) + weights.detach().double(), 1)
    torch.testing.assert_close(p.log_prob(z).double(), ref, atol=1e-5, rtol=1e-5)


def test_vamp_prior_is_mean_of_encoded_pseudo_inputs():
    k, d, latent = 4, 6, 2
    vamp = VampPrior(latent, k, (d,))
    lin = torch.nn.Linear(d, 2 * latent)

    def encoder(x):
        loc, raw = lin(x).chunk(2, -1)
        return diagonal_normal(loc, torch.nn.functional.softplus(raw) + 1e-5)

    p = vamp(encoder)
    z = torch.randn(10, latent)
    comps = encoder(vamp.pseudo_inputs)
    per = torch.stack([diagonal_normal(comps.mean[i], comps.stddev[i]).log_prob(z) for i in range(k)], 1)
    ref = torch.logsumexp(per, 1) - math.log(k)
    torch.testing.assert_close(p.log_prob(z), ref, atol=1e-5, rtol=1e-5)


def test_bernoulli_log_prob_matches_scipy_and_is_stable():
    logits = torch.tensor([[-3.0, 0.0, 2.5, 40.0, -40.0]])
    x = torch.tensor([[0.0, 1.0, 1.0, 1.0, 0.0]])
    dist = BernoulliLikelihood()(logits.unsqueeze(-2), 1)  # params (B, P=1, D)
    p = torch.sigmoid(logits.double()).numpy()
    ref = stats.bernoulli.logpmf(x.numpy(), p).sum()
    assert dist.log_prob(x).shape == (1,)
    assert abs(float(dist.log_prob(x)) - ref) < 1e-5
    # extreme logits on the wrong side stay finite (no log(0))
    wrong = BernoulliLikelihood()(torch.tensor([[[100.0, -100.0]]]), 1).log_prob(torch.tensor([[0.0, 1.0]]))
    assert torch.isfinite(wrong).all() and float(wrong) == pytest.approx(-200.0, abs=1e-3)


def test_bernoulli_accepts_grey_levels_and_refuses_values_outside_unit_interval():
    lik = BernoulliLikelihood()
    lik.check_data(torch.tensor([0.0, 0.3, 1.0]), "ok")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        lik.check_data(torch.tensor([0.0, 1.5]), "the data")


def test_gaussian_log_densities_match_scipy_with_constants():
    torch.manual_seed(3)
    mean, x = torch.randn(4, 1, 6), torch.randn(4, 6)
    fixed = GaussianLikelihood(0.3)(mean, 1)
    ref = stats.norm.logpdf(x.numpy(), mean[:, 0].numpy(), 0.3).sum(1)
    np.testing.assert_allclose(fixed.log_prob(x).numpy(), ref, rtol=1e-5)
    params = torch.randn(4, 2, 6)
    learned = LearnedGaussianLikelihood(1e-3)(params, 1)
    sigma = torch.nn.functional.softplus(params[:, 1]) + 1e-3
    ref = stats.norm.logpdf(x.numpy(), params[:, 0].numpy(), sigma.numpy()).sum(1)
    np.testing.assert_allclose(learned.log_prob(x).detach().numpy(), ref, rtol=1e-5)
    assert learned.log_prob(x).shape == (4,)


def test_fused_bernoulli_matches_torch_distributions_in_value_and_gradient():
    torch.manual_seed(4)
    logits = (3 * torch.randn(3, 5, 1, 4, 4)).requires_grad_()  # (S, B, P, H, W)
    x = torch.rand(5, 4, 4).round()  # broadcasts over the sample dim
    ours = BernoulliLikelihood()(logits, 2).log_prob(x)
    ref = torch.distributions.Independent(
        torch.distributions.Bernoulli(logits=logits.squeeze(2)), 2).log_prob(x)
    assert ours.shape == (3, 5)
    torch.testing.assert_close(ours, ref)
    weights = torch.randn(3, 5)
    (g_ours,) = torch.autograd.grad((ours * weights).sum(), logits)
    (g_ref,) = torch.autograd.grad((ref * weights).sum(), logits)
    torch.testing.assert_close(g_ours, g_ref)
    # gradients with respect to both arguments, by finite differences
    from vaekit.likelihoods import _BernoulliLogLik
    grey = torch.rand(5, 4, 4, dtype=torch.float64, requires_grad=True)
    wide = 3 * torch.randn(3, 5, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda l, v: _BernoulliLogLik.apply(l, v, 2), (wide, grey))


def test_diagonal_gaussian_mixture_matches_torch_mixture_in_value_and_gradient():
    from torch.distributions import Categorical, MixtureSameFamily

    from vaekit.priors import DiagonalGaussianMixture

    g = torch.Generator().manual_seed(5)
    logits = torch.randn(7, generator=g, dtype=torch.float64, requires_grad=True)
    loc = (3 * torch.randn(7, 4, generator=g, dtype=torch.float64)).requires_grad_()
    scale = (0.02 + torch.rand(7, 4, generator=g, dtype=torch.float64)).requires_grad_()  # narrow ones too
    z = 3 * torch.randn(2, 5, 4, generator=g, dtype=torch.float64)
    ours = DiagonalGaussianMixture(logits, loc, scale)
    ref = MixtureSameFamily(Categorical(logits=logits), diagonal_normal(loc, scale))
    assert ours.log_prob(z).shape == (2, 5)
    torch.testing.assert_close(ours.log_prob(z), ref.log_prob(z), rtol=1e-10, atol=1e-8)
    a = torch.autograd.grad(ours.log_prob(z).sum(), (logits, loc, scale))
    b = torch.autograd.grad(ref.log_prob(z).sum(), (logits, loc, scale))
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-8, atol=1e-8)
    # float32 inputs: the float64 expansion keeps the float32 result at float32 accuracy
    z32 = z.float()
    ours32 = DiagonalGaussianMixture(logits.float(), loc.float(), scale.float()).log_prob(z32)
    torch.testing.assert_close(ours32.double(), ref.log_prob(z32.double()), rtol=1e-5, atol=1e-4)
