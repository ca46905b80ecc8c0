"""EM for Gaussian mixtures against scikit-learn, and its monotone log-likelihood."""

import warnings

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.mixture import GaussianMixture as SkGMM

from vaekit.mixture import GaussianMixture, MonotonicityError


def blobs(seed, n=600, d=3, k=4):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=4.0, size=(k, d))
    labels = rng.integers(k, size=n)
    A = rng.normal(size=(k, d, d)) * 0.6
    return centers[labels] + np.einsum("nij,nj->ni", A[labels], rng.normal(size=(n, d))), labels


def shared_init(X, k, cov_type, seed):
    rng = np.random.default_rng(seed + 100)
    means = X[rng.choice(len(X), k, replace=False)]
    weights = np.full(k, 1.0 / k)
    d = X.shape[1]
    precisions = np.stack([np.eye(d)] * k) if cov_type == "full" else np.ones((k, d))
    return dict(weights_init=weights, means_init=means, precisions_init=precisions)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("cov_type", ["full", "diag"])
@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-6), (torch.float32, 1e-4)])
def test_matches_sklearn_from_the_same_initialisation(seed, cov_type, dtype, rtol):
    X, _ = blobs(seed)
    init = shared_init(X, 4, cov_type, seed)
    kw = dict(n_components=4, covariance_type=cov_type, tol=1e-9, max_iter=60, reg_covar=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = GaussianMixture(**kw, **init, dtype=dtype).fit(X)
        ref = SkGMM(**kw, **init).fit(X)
    assert ours.score(X) == pytest.approx(ref.score(X), rel=rtol)
    h = np.array(ours.log_likelihood_history_)
    assert len(h) == ours.n_iter_ and np.all(np.diff(h) >= -1e-9 * abs(h[-1]) - (1e-4 if dtype == torch.float32 else 0))


def test_kmeans_plusplus_fit_is_as_good_as_sklearn_and_keeps_best_restart():
    X, labels = blobs(5, n=1500)
    ours = GaussianMixture(4, n_init=3, random_state=0).fit(X)
    ref = SkGMM(4, n_init=3, random_state=0).fit(X)
    assert ours.converged_ and ours.score(X) >= ref.score(X) - 0.05
    single = [GaussianMixture(4, n_init=1, random_state=s).fit(X).score(X) for s in range(3)]
    assert ours.score(X) >= min(single) - 1e-9


def test_score_samples_matches_scipy_mixture_density():
    X, _ = blobs(3, n=200)
    gm = GaussianMixture(3, random_state=1).fit(X)
    dens = sum(w * stats.multivariate_normal(m, c).pdf(X)
               for w, m, c in zip(gm.weights_.numpy(), gm.means_.numpy(), gm.covariances_.numpy()))
    np.testing.assert_allclose(gm.score_samples(X), np.log(dens), rtol=1e-8)
    np.testing.assert_allclose(gm.predict_proba(X).sum(1), 1.0)
    assert gm.predict(X).shape == (200,)


def test_bic_aic_and_samples_follow_the_fit():
    X, _ = blobs(4, n=3000, d=2, k=2)
    gm = GaussianMixture(2, random_state=0).fit(X)
    ref = SkGMM(2, random_state=0).fit(X)
    assert gm.bic(X) == pytest.approx(ref.bic(X), rel=1e-4)
    assert gm.aic(X) == pytest.approx(ref.aic(X), rel=1e-4)
    xs, ls = gm.sample(20000, generator=torch.Generator().manual_seed(0))
    assert xs.shape == (20000, 2) and set(np.unique(ls)) <= {0, 1}
    np.testing.assert_allclose(xs.mean(0), X.mean(0), atol=0.1)
    np.testing.assert_allclose(np.bincount(ls) / len(ls), gm.weights_.numpy(), atol=0.02)


def test_monotonicity_check_names_the_iteration(monkeypatch):
    X, _ = blobs(0)
    gm = GaussianMixture(3, random_state=0, tol=0)
    real = GaussianMixture._m_step
    calls = {"n": 0}

    def sabotaged(self, X, log_resp):  # a broken M-step: shift the means at iteration 3
        w, m, c = real(self, X, log_resp)
        calls["n"] += 1
        if calls["n"] == 4:  # the first call is the initialisation
            m = m + 5.0
        return w, m, c

    monkeypatch.setattr(GaussianMixture, "_m_step", sabotaged)
    with pytest.raises(MonotonicityError, match="iteration 3"):
        gm.fit(X)
    calls["n"] = 0
    with pytest.warns(RuntimeWarning, match="iteration 3"):
        GaussianMixture(3, random_state=0, tol=0, max_iter=5, monotonic="warn").fit(X)


def test_convergence_warning_gives_advice():
    X, _ = blobs(1)
    from sklearn.exceptions import ConvergenceWarning
    with pytest.warns(ConvergenceWarning, match="max_iter"):
        GaussianMixture(4, max_iter=2, tol=1e-12, random_state=0).fit(X)


def test_bad_input_is_one_clear_error():
    X, _ = blobs(0, n=10)
    with pytest.raises(ValueError, match="larger than the number of points"):
        GaussianMixture(11).fit(X)
    gm = GaussianMixture(2, random_state=0).fit(X)
    with pytest.raises(ValueError, match="fitted on 3"):
        gm.predict(np.zeros((2, 4)))
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        GaussianMixture(2).fit(bad)
    with pytest.raises(ValueError, match="2-D"):
        GaussianMixture(2).fit(np.zeros(5))
    with pytest.raises(RuntimeError, match="not fitted"):
        GaussianMixture(2).score(X)


def test_collapsed_component_raises_with_advice():
    X = np.repeat(np.eye(3), 20, axis=0)  # three points repeated: zero variance clusters
    with pytest.raises(ValueError, match="reg_covar"):
        GaussianMixture(3, reg_covar=0.0, random_state=0).fit(X)
    GaussianMixture(3, reg_covar=1e-3, random_state=0).fit(X)  # regularisation saves it


def _q_covariance_term(X, resp, means, covs):
    """sum_n sum_k r_nk log N(x_n | mu_k, Sigma_k), by scipy: EM's Q without the weights."""
    from scipy import stats
    return sum(float((resp[:, k] * stats.multivariate_normal(means[k], covs[k]).logpdf(X)).sum())
               for k in range(len(means)))


def test_reg_covar_allowance_is_the_exact_loss_of_q_and_bounds_every_fall():
    """With reg_covar the M-step is not EM's exact maximiser, and the log-likelihood can
    truly fall; the allowance is exactly the Q lost to it (checked against scipy), every
    fall stays within it, and a fit with monotonic="raise" therefore succeeds."""
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(c, 0.05, size=(60, 2)) for c in ([0, 0], [1, 0], [0, 1], [0.5, 0.5])])
    for cov_type in ("full", "diag"):
        gm = GaussianMixture(3, covariance_type=cov_type, reg_covar=0.1, tol=0, max_iter=30,
                             random_state=0, monotonic="raise").fit(X)
        assert np.diff(gm.log_likelihood_history_).min() < -1e-3  # the fall is real
    gm = GaussianMixture(3, reg_covar=0.1, random_state=0, max_iter=3).fit(X)
    Xt = torch.as_tensor(X)
    resp = torch.as_tensor(gm.predict_proba(X))
    weights, means, covs = gm._m_step(Xt, resp.log())
    exact = covs - 0.1 * torch.eye(2)  # the unregularised maximiser S_k
    lost = (_q_covariance_term(X, resp.numpy(), means.numpy(), exact.numpy())
            - _q_covariance_term(X, resp.numpy(), means.numpy(), covs.numpy())) / len(X)
    assert lost > 0
    assert gm._regularisation_allowance(covs, weights) == pytest.approx(lost, rel=1e-6)


def test_unseeded_fits_and_samples_leave_torchs_global_generator_alone():
    # random_state=None draws from a generator of its own (OS entropy), never by reseeding
    # torch's global one in the middle of a program
    X = torch.randn(200, 2, dtype=torch.float64)
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    gm = GaussianMixture(n_components=2, random_state=None).fit(X)
    gm.sample(5)
    assert torch.equal(torch.rand(4), expected)
