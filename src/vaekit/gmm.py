"""`vaekit gmm`: fit a Gaussian mixture by EM to points (a file, a dataset or a run's codes),
and draw the fit and the log-likelihood per iteration."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import plots
from .checkpoint import atomic_write_bytes


def gmm_report(data: str, components: int, *, covariance_type: str = "full", max_iter: int = 200,
               tol: float = 1e-6, n_init: int = 1, reg_covar: float = 1e-6, seed: int = 0,
               data_dir: str | None = None, out: str | Path | None = None) -> dict:
    """Fit a Gaussian mixture by EM to the points in ``data`` and draw the fit and the
    log-likelihood per iteration into ``out`` (``mixture_fit.png``,
    ``log_likelihood.png``). Returns the numbers (history, BIC, AIC) and the figure paths."""
    from .data import Where, data_dir_from, read_points
    from .mixture import GaussianMixture

    x, labels = read_points(data, Where(data_dir_from(data_dir), seed))
    gm = GaussianMixture(components, covariance_type=covariance_type, max_iter=max_iter, tol=tol,
                         n_init=n_init, reg_covar=reg_covar, random_state=seed).fit(x)
    folder = Path(out) if out else Path(f"{Path(data).stem}-gmm")
    weights, means = _cpu(gm.weights_), _cpu(gm.means_)
    covs = _cpu(gm.covariances_)
    color = None
    if labels is not None and np.issubdtype(np.asarray(labels).dtype, np.number):
        color = np.asarray(labels, dtype=np.float64)
    shown = x if x.shape[1] <= 2 else x[:, :2]
    fit_png = plots.png_bytes(plots.mixture_fit(shown, weights, means, covs, covariance_type, color))
    ll_png = plots.png_bytes(plots.log_likelihood_history(gm.log_likelihood_history_))
    paths = [folder / "mixture_fit.png", folder / "log_likelihood.png"]
    atomic_write_bytes(paths[0], fit_png)
    atomic_write_bytes(paths[1], ll_png)
    return {"n": len(x), "d": x.shape[1], "history": list(gm.log_likelihood_history_),
            "converged": bool(gm.converged_), "n_iter": int(gm.n_iter_), "bic": gm.bic(x),
            "aic": gm.aic(x), "figures": [str(p) for p in paths], "model": gm}


def _cpu(t):
    return t.detach().cpu().numpy() if hasattr(t, "detach") else t
