"""Gaussian mixtures fitted by EM (Dempster, Laird & Rubin 1977), in PyTorch.

The E-step computes responsibilities r_nk = p(k | x_n) under the current parameters; the
M-step maximises the expected complete-data log-likelihood, a lower bound of
log p(X) that touches it at the current parameters, so the log-likelihood can only rise.
:class:`GaussianMixture` checks that on every fit: a decrease larger than round-off
raises (or warns), naming the iteration.

The estimator follows scikit-learn's contract (``fit`` returns self, fitted attributes end
in ``_``, best of ``n_init`` restarts, a ``ConvergenceWarning`` with advice) and its
parameterisation (``reg_covar`` added to every covariance's diagonal, k-means++
initialisation with one-hot responsibilities), so fits can be compared with
``sklearn.mixture.GaussianMixture`` number for number. Everything is in log space; the
Gaussian log-densities of all K components come from one matrix multiply with the
Cholesky factors of the precisions.

Latent samplers for a trained VAE build on it (:func:`fit_latent_mixture`).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from .devices import wide_dtype

try:
    from sklearn.exceptions import ConvergenceWarning
except ImportError:  # pragma: no cover - scikit-learn is a dependency
    class ConvergenceWarning(UserWarning):
        pass


class MonotonicityError(RuntimeError):
    """EM's log-likelihood went down by more than round-off: a bug or a broken input."""


class GaussianMixture:
    """A mixture of K Gaussians with ``full`` or ``diag`` covariances, fitted by EM.

    Parameters mirror ``sklearn.mixture.GaussianMixture`` where they share a name.
    ``dtype`` (None: float64, or float32 on Apple's MPS, which has no float64) and
    ``device`` choose where the arithmetic runs;
    ``monotonic`` is "raise", "warn" or "ignore" for a decreasing log-likelihood.
    """

    def __init__(self, n_components: int = 1, *, covariance_type: str = "full", tol: float = 1e-3,
                 reg_covar: float = 1e-6, max_iter: int = 100, n_init: int = 1,
                 init_params: str = "k-means++", weights_init=None, means_init=None,
                 precisions_init=None, random_state: int | None = None,
                 dtype: torch.dtype | None = None, device: str | torch.device | None = None,
                 monotonic: str = "raise", verbose: int = 0, cache_bytes: int = 256 * 2**20):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.dtype = dtype
        self.device = device
        self.monotonic = monotonic
        self.verbose = verbose
        self.cache_bytes = cache_bytes

    # ------------------------------------------------------------------ validation

    def _check_params(self) -> None:
        if not isinstance(self.n_components, (int, np.integer)) or self.n_components < 1:
            raise ValueError(f"n_components must be a positive integer, got {self.n_components!r}")
        if self.covariance_type not in ("full", "diag"):
            raise ValueError(f"covariance_type must be 'full' or 'diag', got {self.covariance_type!r}")
        if self.tol < 0 or self.reg_covar < 0 or self.max_iter < 1 or self.n_init < 1:
            raise ValueError("tol and reg_covar must be >= 0, max_iter and n_init >= 1")
        if self.monotonic not in ("raise", "warn", "ignore"):
            raise ValueError(f"monotonic must be 'raise', 'warn' or 'ignore', got {self.monotonic!r}")
        if self.init_params not in ("k-means++", "random"):
            raise ValueError(f"init_params must be 'k-means++' or 'random', got {self.init_params!r}")

    def _as_tensor(self, X, what: str = "X") -> torch.Tensor:
        t = torch.as_tensor(np.asarray(X) if not isinstance(X, torch.Tensor) else X)
        t = t.to(device=self.device, dtype=self._dtype())
        if t.dim() == 1:
            raise ValueError(f"{what} must be 2-D (n_samples, n_features), got a 1-D array of "
                             f"shape {tuple(t.shape)}; use X.reshape(-1, 1) for one feature")
        if t.dim() != 2:
            raise ValueError(f"{what} must be 2-D (n_samples, n_features), got shape {tuple(t.shape)}")
        if not torch.isfinite(t).all():
            raise ValueError(f"{what} contains NaN or infinite values; remove or impute them")
        return t

    def _dtype(self) -> torch.dtype:
        if self.dtype is not None:
            return self.dtype
        return wide_dtype(self.device if self.device is not None else "cpu")

    def _check_fitted(self) -> None:
        if not hasattr(self, "means_"):
            raise RuntimeError("this GaussianMixture is not fitted yet; call fit(X) first")

    def _check_features(self, X: torch.Tensor) -> None:
        d = self.means_.shape[1]
        if X.shape[1] != d:
            raise ValueError(f"X has {X.shape[1]} features, but the mixture was fitted on {d}")

    # ----------------------------------------------------------------- the maths

    def _precision_cholesky(self, covariances: torch.Tensor) -> torch.Tensor:
        """U with U U^T = Sigma^-1 (full: U = L^-T for Sigma = L L^T; diag: 1/sqrt)."""
        if self.covariance_type == "diag":
            if (covariances <= 0).any():
                raise ValueError(self._collapse_message())
            return covariances.rsqrt()
        chol, info = torch.linalg.cholesky_ex(covariances)
        if (info != 0).any():
            raise ValueError(self._collapse_message(int(torch.nonzero(info)[0, 0])))
        eye = torch.eye(covariances.shape[-1], dtype=covariances.dtype, device=covariances.device)
        eye = eye.expand_as(covariances)
        return torch.linalg.solve_triangular(chol, eye, upper=False).transpose(-1, -2)

    def _collapse_message(self, k: int | None = None) -> str:
        which = f"component {k}" if k is not None else "a component"
        return (f"{which} collapsed: its covariance is singular even with reg_covar="
                f"{self.reg_covar:g}; increase reg_covar, use fewer components, or remove "
                "duplicate points")

    def _points(self, X) -> "_Points":
        return X if isinstance(X, _Points) else _Points(X, self.covariance_type)

    def _log_gaussian(self, X, means, prec_chol) -> torch.Tensor:
        """log N(x_n | mu_k, Sigma_k) for all n, k: (N, K).

        Full covariances, D <= 64: the Mahalanobis terms as matrix products over the
        points' outer products, (x - mu)^T P (x - mu) = vec(x x^T) . vec(P) - 2 x^T P mu
        + mu^T P mu with P = U U^T, on data centred once (so the expansion loses nothing
        to cancellation); no (N, K, D) temporary. Wider data: y = (x - mu)^T U for all k in
        one product per chunk of rows. Diagonal: the same expansion per coordinate."""
        pts = self._points(X)
        n, d = pts.X.shape
        k = means.shape[0]
        mc = means - pts.shift  # (K, D), centred like the points
        if self.covariance_type == "full":
            log_det = torch.log(torch.diagonal(prec_chol, dim1=-2, dim2=-1)).sum(-1)  # (K,)
            if pts.outer_products:
                prec = prec_chol @ prec_chol.transpose(-1, -2)  # (K, D, D)
                prec_mean = (prec @ mc[..., None])[..., 0]  # (K, D)
                maha = pts.quadratic(prec.reshape(k, d * d))  # (N, K)
                maha.addmm_(pts.Xc, prec_mean.T, alpha=-2).add_((mc * prec_mean).sum(1))
            else:
                maha = torch.empty(n, k, dtype=pts.X.dtype, device=pts.X.device)
                offset = torch.einsum("kd,kde->ke", mc, prec_chol).reshape(-1)  # mu_k^T U_k
                flat_u = prec_chol.permute(1, 0, 2).reshape(d, k * d)
                for i in range(0, n, pts.rows):
                    y = torch.addmm(-offset, pts.Xc[i:i + pts.rows], flat_u)  # (rows, K*D)
                    maha[i:i + pts.rows] = y.square_().view(-1, k, d).sum(-1)
            maha.clamp_(min=0)  # the expansion's round-off can dip below zero
        else:
            prec = prec_chol**2  # (K, D)
            log_det = torch.log(prec_chol).sum(-1)
            maha = pts.Xc2 @ prec.T
            maha.addmm_(pts.Xc, (mc * prec).T, alpha=-2).add_((mc**2 * prec).sum(1)).clamp_(min=0)
        return -0.5 * (d * math.log(2 * math.pi) + maha) + log_det

    def _estimate_weighted_log_prob(self, X, weights, means, prec_chol) -> torch.Tensor:
        return self._log_gaussian(X, means, prec_chol) + torch.log(weights)

    def _e_step(self, X, params):
        weighted = self._estimate_weighted_log_prob(X, *params)  # (N, K)
        log_norm = _logsumexp_rows(weighted)  # (N,)
        return float(log_norm.mean()), weighted - log_norm[:, None]

    def _m_step(self, X, log_resp):
        """Weights, means and covariances maximising EM's Q for responsibilities r; the
        covariance is sum_n r_nk x_n x_n^T / n_k - mu_k mu_k^T (+ reg_covar), from the
        centred points' outer products in one product when D <= 64."""
        pts = self._points(X)
        # Subnormal numbers are ~20x slower on x86 and float32 meets them often: a
        # responsibility below sqrt(tiny) (1e-19 in float32) is set to 0, so that neither it,
        # nor exp's intermediates, nor its products in the sums below are subnormal. Its
        # share of n_k is < 1e-19.
        floor = _half_log_tiny(log_resp.dtype)
        resp = log_resp.clamp(min=floor).exp_().masked_fill_(log_resp <= floor, 0.0)
        nk = resp.sum(0) + 10 * torch.finfo(resp.dtype).eps  # (K,)
        mc = resp.T @ pts.Xc / nk[:, None]  # (K, D) centred means
        d = pts.X.shape[1]
        if self.covariance_type == "full":
            eye = torch.eye(d, dtype=resp.dtype, device=resp.device)
            if pts.outer_products:
                second = pts.weighted_outer(resp).view(-1, d, d) / nk[:, None, None]  # (K, D, D)
                covariances = second - mc[:, :, None] * mc[:, None, :]
                covariances = 0.5 * (covariances + covariances.transpose(-1, -2)) + self.reg_covar * eye
            else:
                covs = []
                for k in range(mc.shape[0]):
                    diff = pts.Xc - mc[k]
                    covs.append((resp[:, k, None] * diff).T @ diff / nk[k] + self.reg_covar * eye)
                covariances = torch.stack(covs)
        else:
            covariances = resp.T @ pts.Xc2 / nk[:, None] - mc**2 + self.reg_covar
        weights = nk / nk.sum()
        return weights, mc + pts.shift, covariances

    def _regularisation_allowance(self, covariances: torch.Tensor, weights: torch.Tensor) -> float:
        """How far the mean log-likelihood may fall in one EM step because ``reg_covar`` is
        added to the covariances, so that the M-step is not the exact maximiser.

        EM guarantees l(new) - l(old) >= Q(new | old) - Q(old | old). Weights and means are
        exact maximisers of Q; a covariance S + lambda I in place of the maximiser S loses
        (n_k / 2) sum_i [log(1 + lambda / s_i) - lambda / (s_i + lambda)] of Q, s_i the
        eigenvalues of S. So l may fall by at most the sum of these over components, per
        point; a larger fall is a real violation. Infinite when some s_i is 0."""
        lam = self.reg_covar
        if lam == 0:
            return 0.0
        ev = torch.linalg.eigvalsh(covariances) if self.covariance_type == "full" else covariances
        s = ev - lam  # eigenvalues of the unregularised S
        if bool((s <= 0).any()):
            return math.inf
        per_component = (torch.log1p(lam / s) - lam / ev).sum(-1)  # (K,)
        return float(0.5 * (weights * per_component).sum())  # n_k / N = weights

    # ------------------------------------------------------------ initialisation

    def _initial_params(self, pts: "_Points", gen: torch.Generator):
        X = pts.X
        n, d = X.shape
        k = self.n_components
        if self.means_init is not None:
            weights = (torch.as_tensor(np.asarray(self.weights_init), dtype=X.dtype, device=X.device)
                       if self.weights_init is not None
                       else torch.full((k,), 1.0 / k, dtype=X.dtype, device=X.device))
            means = torch.as_tensor(np.asarray(self.means_init), dtype=X.dtype, device=X.device)
            if means.shape != (k, d):
                raise ValueError(f"means_init must have shape ({k}, {d}), got {tuple(means.shape)}")
            if self.precisions_init is not None:
                prec = torch.as_tensor(np.asarray(self.precisions_init), dtype=X.dtype, device=X.device)
                covariances = torch.linalg.inv(prec) if self.covariance_type == "full" else 1.0 / prec
            else:
                _, _, covariances = self._m_step(pts, self._hard_log_resp(X, means))
            return weights, means, covariances
        if self.init_params == "k-means++":
            idx = kmeans_plusplus(X, k, gen)
        else:
            idx = torch.randperm(n, generator=gen)[:k].to(X.device)
        log_resp = torch.full((n, k), -math.inf, dtype=X.dtype, device=X.device)
        log_resp[idx, torch.arange(k, device=X.device)] = 0.0  # one point per component
        return self._m_step(pts, log_resp)

    def _hard_log_resp(self, X, means):
        nearest = torch.cdist(X, means).argmin(1)
        log_resp = torch.full((len(X), len(means)), -math.inf, dtype=X.dtype, device=X.device)
        log_resp[torch.arange(len(X), device=X.device), nearest] = 0.0
        return log_resp

    # ------------------------------------------------------------------- fitting

    def fit(self, X, y=None) -> "GaussianMixture":
        """Fit by EM; keep the best of ``n_init`` runs. Returns self."""
        self._check_params()
        X = self._as_tensor(X)
        n = X.shape[0]
        if n < self.n_components:
            raise ValueError(f"n_components={self.n_components} is larger than the number of "
                             f"points ({n}); use at most {n} components or give more data")
        gen = _generator(self.random_state)
        pts = _Points(X, self.covariance_type, cache_bytes=self.cache_bytes)
        best = None
        for init in range(self.n_init):
            result = self._fit_once(pts, gen, init)
            if best is None or result["ll"] > best["ll"]:
                best = result
        self.weights_, self.means_, self.covariances_ = best["params"]
        self.precisions_cholesky_ = self._precision_cholesky(self.covariances_)
        self.converged_ = best["converged"]
        self.n_iter_ = best["n_iter"]
        self.log_likelihood_history_ = best["history"]
        self.lower_bound_ = best["ll"]
        self.n_features_in_ = X.shape[1]
        if not self.converged_:
            warnings.warn(
                f"EM did not converge in max_iter={self.max_iter} iterations (last change "
                f"{best['last_change']:.2e} > tol={self.tol:g}); raise max_iter, loosen tol, or "
                "try other initialisations (n_init)", ConvergenceWarning, stacklevel=2)
        return self

    def _fit_once(self, pts, gen, init: int) -> dict:
        X = pts.X
        weights, means, covariances = self._initial_params(pts, gen)
        params = (weights, means, self._precision_cholesky(covariances))
        ll, log_resp = self._e_step(pts, params)
        history, converged, change = [], False, math.inf
        # Round-off allowance for the monotonicity check, relative to the size of ll.
        slack = 1e3 * torch.finfo(X.dtype).eps * max(1.0, abs(ll))
        it = 0
        for it in range(1, self.max_iter + 1):
            weights, means, covariances = self._m_step(pts, log_resp)
            params = (weights, means, self._precision_cholesky(covariances))
            new_ll, log_resp = self._e_step(pts, params)
            history.append(new_ll)
            if self.verbose:
                print(f"init {init} iteration {it}: mean log-likelihood {new_ll:.6f}")
            if new_ll < ll - slack and new_ll < ll - slack - self._regularisation_allowance(
                    covariances, weights):
                msg = (f"EM log-likelihood decreased at iteration {it}: {ll:.10g} -> {new_ll:.10g} "
                       "(more than round-off and the reg_covar allowance); check the data for "
                       "duplicates or extreme values")
                if self.monotonic == "raise":
                    raise MonotonicityError(msg)
                if self.monotonic == "warn":
                    warnings.warn(msg, RuntimeWarning, stacklevel=3)
            change = new_ll - ll
            ll = new_ll
            if abs(change) < self.tol:
                converged = True
                break
        return {"params": (weights, means, covariances), "ll": ll, "history": history,
                "converged": converged, "n_iter": it, "last_change": abs(change)}

    # ---------------------------------------------------------------- inference

    def _params(self):
        return self.weights_, self.means_, self.precisions_cholesky_

    def score_samples(self, X) -> np.ndarray:
        """log p(x) per sample."""
        self._check_fitted()
        X = self._as_tensor(X)
        self._check_features(X)
        return _logsumexp_rows(self._estimate_weighted_log_prob(X, *self._params())).cpu().numpy()

    def score(self, X, y=None) -> float:
        """Mean log-likelihood per sample."""
        return float(np.mean(self.score_samples(X)))

    def predict_proba(self, X) -> np.ndarray:
        self._check_fitted()
        X = self._as_tensor(X)
        self._check_features(X)
        _, log_resp = self._e_step(X, self._params())
        return log_resp.exp().cpu().numpy()

    def predict(self, X) -> np.ndarray:
        return self.predict_proba(X).argmax(1)

    def sample(self, n_samples: int = 1, generator: torch.Generator | None = None):
        """(X, labels): n draws from the fitted mixture, as NumPy arrays."""
        self._check_fitted()
        if n_samples < 1:
            raise ValueError(f"n_samples must be at least 1, got {n_samples}")
        x, labels = self.sample_torch(n_samples, generator)
        return x.cpu().numpy(), labels.cpu().numpy()

    def sample_torch(self, n_samples: int, generator: torch.Generator | None = None):
        gen = generator or _generator(self.random_state)
        weights = self.weights_.cpu()
        labels = torch.multinomial(weights, n_samples, replacement=True, generator=gen)
        d = self.means_.shape[1]
        eps = torch.randn(n_samples, d, generator=gen, dtype=self.means_.dtype)
        means = self.means_.cpu()[labels]
        if self.covariance_type == "full":
            chol = torch.linalg.cholesky(self.covariances_.cpu())[labels]  # (n, D, D)
            x = means + (chol @ eps[:, :, None])[:, :, 0]
        else:
            x = means + self.covariances_.cpu()[labels].sqrt() * eps
        return x, labels

    def _n_parameters(self) -> int:
        k, d = self.means_.shape
        cov = k * d * (d + 1) // 2 if self.covariance_type == "full" else k * d
        return int(cov + k * d + k - 1)

    def bic(self, X) -> float:
        X = np.asarray(X)
        return -2 * self.score(X) * len(X) + self._n_parameters() * math.log(len(X))

    def aic(self, X) -> float:
        X = np.asarray(X)
        return -2 * self.score(X) * len(X) + 2 * self._n_parameters()


def _half_log_tiny(dtype: torch.dtype) -> float:
    """log sqrt(tiny): about -43.7 in float32, -354 in float64. exp of anything above it,
    and every product of two such numbers, stays a normal number."""
    return 0.5 * math.log(torch.finfo(dtype).tiny)


def _logsumexp_rows(a: torch.Tensor) -> torch.Tensor:
    """log sum_k exp(a_nk) per row, with exponents clamped at log sqrt(tiny) so that exp
    meets no subnormal number (slow on x86); the sum, at least 1, changes by at most
    K sqrt(tiny) (1e-19 relative in float32), far below round-off."""
    top = a.amax(1, keepdim=True)  # (N, 1)
    shifted = (a - top).clamp_(min=_half_log_tiny(a.dtype))
    return top[:, 0] + shifted.exp_().sum(1).log_()


class _Points:
    """The data as EM uses them, prepared once per fit: centred on their mean (every
    quadratic expansion is then free of cancellation; ``shift`` is added back to the
    means), with the squares (diagonal covariances) or the outer products x x^T (full
    covariances, D <= 64) in chunks of about 8 MB, kept in memory up to ``cache_bytes``
    and otherwise recomputed chunk by chunk at each use."""

    MAX_OUTER_DIM = 64

    def __init__(self, X: torch.Tensor, covariance_type: str, cache_bytes: int = 0):
        self.X = X
        n, d = X.shape
        self.shift = X.mean(0)
        self.Xc = X - self.shift  # (N, D)
        self.Xc2 = self.Xc.square() if covariance_type == "diag" else None
        self.outer_products = covariance_type == "full" and d <= self.MAX_OUTER_DIM
        width = d * d if self.outer_products else d * max(d, 1)
        self.rows = max(1, (8 * 2**20) // (width * X.element_size()))
        self._cache = None
        if self.outer_products and n * d * d * X.element_size() <= cache_bytes:
            self._cache = [self._outer(i) for i in range(0, n, self.rows)]

    def _outer(self, i: int) -> torch.Tensor:
        xc = self.Xc[i:i + self.rows]
        return (xc[:, :, None] * xc[:, None, :]).reshape(len(xc), -1)  # (rows, D*D)

    def _chunks(self):
        for j, i in enumerate(range(0, len(self.X), self.rows)):
            yield i, (self._cache[j] if self._cache is not None else self._outer(i))

    def quadratic(self, flat: torch.Tensor) -> torch.Tensor:
        """x_n^T A_k x_n for all n, k, given A as (K, D*D): (N, K)."""
        out = torch.empty(len(self.X), flat.shape[0], dtype=self.X.dtype, device=self.X.device)
        for i, xx in self._chunks():
            torch.mm(xx, flat.T, out=out[i:i + len(xx)])
        return out

    def weighted_outer(self, resp: torch.Tensor) -> torch.Tensor:
        """sum_n r_nk x_n x_n^T for all k: (K, D*D)."""
        d = self.X.shape[1]
        acc = torch.zeros(resp.shape[1], d * d, dtype=self.X.dtype, device=self.X.device)
        for i, xx in self._chunks():
            acc.addmm_(resp[i:i + len(xx)].T, xx)
        return acc


def kmeans_plusplus(X: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """Indices of k seeds chosen by greedy k-means++ (Arthur & Vassilvitskii 2007): each new
    seed is the best, by total squared distance, of 2 + log k candidates drawn in proportion
    to the squared distance to the nearest seed so far."""
    n = X.shape[0]
    trials = 2 + int(math.log(k))
    first = int(torch.randint(n, (1,), generator=gen))
    idx = [first]
    closest = ((X - X[first]) ** 2).sum(1)  # (N,)
    for _ in range(1, k):
        total = float(closest.sum())
        if total <= 0:  # all remaining points coincide with seeds
            rest = [i for i in range(n) if i not in set(idx)]
            idx.append(rest[0])
            continue
        probs = (closest / total).cpu()
        candidates = torch.multinomial(probs, trials, replacement=True, generator=gen).to(X.device)
        dist = torch.cdist(X[candidates], X) ** 2  # (trials, N)
        new_closest = torch.minimum(closest[None], dist)
        best = int(new_closest.sum(1).argmin())
        idx.append(int(candidates[best]))
        closest = new_closest[best]
    return torch.tensor(idx, device=X.device)


# ------------------------------------------------------------- latent samplers for a VAE


def parse_sampler(text: str) -> tuple[str, str | None]:
    """``"prior"``, ``"gmm"`` or ``"class:LABEL"`` -> (kind, label)."""
    if text in ("prior", "gmm"):
        return text, None
    if text.startswith("class:") and len(text) > 6:
        return "class", text[6:]
    raise ValueError(f"unknown sampler {text!r}; use prior, gmm or class:LABEL (e.g. class:3)")


def resolve_class(label: str, class_names: list[str] | None, labels) -> int:
    """A class given by name (as the dataset names it) or by index -> its index."""
    if labels is None or class_names is None:
        raise ValueError("the class:LABEL sampler needs a dataset with class labels; this run's "
                         "data has none (use --sampler gmm)")
    if label in class_names:
        return class_names.index(label)
    if label.isdigit() and int(label) < len(class_names):
        return int(label)
    raise ValueError(f"unknown class {label!r}; this run's classes are: {', '.join(class_names)}")


def fit_latent_mixture(codes: torch.Tensor, n_components: int = 10, seed: int = 0,
                       covariance_type: str = "full") -> GaussianMixture:
    """Ex-post density estimation (Ghosh et al. 2020): a mixture fitted to posterior means."""
    k = max(1, min(n_components, len(codes) // 5 or 1))
    return GaussianMixture(k, covariance_type=covariance_type, random_state=seed, n_init=2,
                           reg_covar=1e-4, max_iter=200).fit(codes.detach().cpu().double())


def latent_sampler(kind: str, codes: torch.Tensor, labels=None, target: int | None = None,
                   n_components: int = 10, seed: int = 0):
    """A function n -> z of shape (n, L) drawn from a mixture fitted to all codes (``gmm``)
    or to the codes of one class (``class``). (Prior draws: ``explore.prior_sample``.)"""
    gen = torch.Generator().manual_seed(seed)
    if kind == "gmm":
        gm = fit_latent_mixture(codes, n_components, seed)
    elif kind == "class":
        mine = codes[torch.as_tensor(labels) == target]
        if len(mine) < 2:
            raise ValueError(f"class {target} has {len(mine)} training codes; too few to fit")
        gm = fit_latent_mixture(mine, min(3, n_components), seed)
    else:
        raise ValueError(f"unknown sampler kind {kind!r}")
    return lambda n: gm.sample_torch(n, gen)[0].float()


def _generator(random_state: int | None) -> torch.Generator:
    """A CPU generator of its own: seeded with ``random_state``, or from the operating
    system's entropy when it is None (as scikit-learn's ``random_state=None``), never by
    reseeding torch's global generator, which the rest of a program draws from."""
    gen = torch.Generator()
    if random_state is None:
        gen.seed()
    else:
        gen.manual_seed(int(random_state))
    return gen
