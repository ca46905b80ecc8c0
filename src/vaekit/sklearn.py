"""A scikit-learn estimator over vaekit's core: ``vaekit.sklearn.VAE``, a transformer.

    >>> from vaekit.sklearn import VAE
    >>> vae = VAE(latent_dim=2, epochs=30, random_state=0).fit(X)
    >>> Z = vae.transform(X)              # posterior means E_q[z|x]
    >>> X_hat = vae.inverse_transform(Z)  # means of p(x|z)
    >>> vae.score_samples(X)              # log p(x) per example, importance-sampled
    >>> vae.score(X)                      # their mean: GridSearchCV picks by it

Training is vaekit's own :class:`~vaekit.train.Trainer` (in memory, nothing written), on
data prepared by :func:`~vaekit.data.prepare_dataset` (standardised for a Gaussian
likelihood, with the log-Jacobian added back so that ``score_samples`` is in the units of
``X``). After fitting, inference runs on a float64 copy of the network, so an example's code
and score do not depend on the batch it came in (scikit-learn's invariance checks).
``score_samples`` uses the same K standard normal draws eps_k for every example, z_k =
mu(x) + sigma(x) eps_k: an unbiased importance-sampling estimate per example that depends on
that example alone.

``likelihood="auto"`` is Bernoulli when X holds only 0s and 1s, else a Gaussian with fixed
``sigma`` on standardised features.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from . import config as config_mod
from .data import RawData, prepare_dataset
from .devices import seeded
from .explore import prior_sample
from .model import build_vae
from .objectives import importance_sampled
from .train import Trainer

__all__ = ["VAE"]


class VAE(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Variational auto-encoder as a scikit-learn transformer.

    Parameters
    ----------
    latent_dim : size of the latent space (the number of output features of ``transform``),
        or a list of level sizes from the data up for a hierarchical VAE (``transform`` then
        gives all levels' ancestral posterior means, concatenated).
    hidden : hidden layer widths of the MLP encoder; the decoder mirrors them.
    activation, gated : hidden units (see vaekit's ``model`` settings).
    likelihood : "auto", "bernoulli" (X in [0, 1]), "gaussian" (fixed ``sigma`` on
        standardised features) or "gaussian-learned".
    sigma : the Gaussian likelihood's standard deviation, in standardised units.
    prior : "normal", "mixture" or "vamp".
    epochs, batch_size, lr, beta, warmup_epochs : training (Adam on the ELBO).
    train_samples : K > 1 trains the importance-weighted bound L_K.
    ema_decay : d > 0 keeps (and validates) an exponential moving average of the weights,
        updated after every step with decay d (Polyak averaging); 0 keeps the weights.
    weight_decay : decoupled weight decay of the layers' weight matrices (AdamW); 0 = off.
    early_stopping, validation_fraction, patience : hold out a fraction of X and keep the
        epoch with the best validation objective; off by default (the last epoch is kept).
    importance_samples : K for ``score_samples``.
    random_state : int, RandomState or None; with an int, fitting is repeatable on a CPU.
    device : "cpu", "cuda", "mps" or "auto".
    """

    def __init__(self, latent_dim=2, hidden=(128, 64), activation="relu", gated=False,
                 likelihood="auto", sigma=0.1, prior="normal", epochs=50, batch_size=128,
                 lr=1e-3, beta=1.0, warmup_epochs=0, train_samples=1, ema_decay=0.0,
                 weight_decay=0.0, early_stopping=False,
                 validation_fraction=0.1, patience=10, importance_samples=100,
                 random_state=None, device="cpu"):
        self.latent_dim = latent_dim
        self.hidden = hidden
        self.activation = activation
        self.gated = gated
        self.likelihood = likelihood
        self.sigma = sigma
        self.prior = prior
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.beta = beta
        self.warmup_epochs = warmup_epochs
        self.train_samples = train_samples
        self.ema_decay = ema_decay
        self.weight_decay = weight_decay
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.importance_samples = importance_samples
        self.random_state = random_state
        self.device = device

    # ------------------------------------------------------------------- fitting

    def _config(self, likelihood: str, seed: int, n: int) -> config_mod.Config:
        valid = float(self.validation_fraction) if self.early_stopping else 0.0
        if self.early_stopping and not 0.0 < valid < 1.0:
            raise ValueError(f"validation_fraction must lie strictly between 0 and 1, got {valid!r}")
        settings = {
            "data": {"name": "array", "binarize": "none", "valid_fraction": valid,
                     "test_fraction": 0.0, "split_seed": seed},
            "model": {"latent_dim": self._levels() if len(self._levels()) > 1 else self._levels()[0],
                      "hidden": [int(h) for h in self.hidden],
                      "activation": self.activation, "gated": bool(self.gated),
                      "likelihood": likelihood, "sigma": float(self.sigma), "prior": self.prior},
            "train": {"epochs": int(self.epochs), "batch_size": int(min(self.batch_size, n)),
                      "lr": float(self.lr), "beta": float(self.beta),
                      "warmup_epochs": int(self.warmup_epochs),
                      "importance_samples": int(self.train_samples),
                      "ema_decay": float(self.ema_decay),
                      "weight_decay": float(self.weight_decay),
                      "patience": int(self.patience) if self.early_stopping else 0,
                      "seed": seed, "device": self.device, "progress": False},
            "report": {"enabled": False},
        }
        cfg = config_mod.merge(config_mod.Config(), {k: v for k, v in settings.items() if k != "data"})
        cfg.validate()  # the model and training settings, with vaekit's own messages
        data = dict(config_mod.Config().to_dict()["data"], **settings["data"])
        cfg.data = config_mod.DataConfig(**data)  # fractions of 0 are the estimator's own
        return cfg

    def _likelihood(self, X: np.ndarray) -> str:
        if self.likelihood == "auto":
            return "bernoulli" if np.isin(X, (0.0, 1.0)).all() else "gaussian"
        if self.likelihood == "bernoulli" and (X.min() < 0 or X.max() > 1):
            raise ValueError(f"likelihood='bernoulli' needs X in [0, 1], but X lies in "
                             f"[{X.min():g}, {X.max():g}]; scale it (e.g. MinMaxScaler) or use "
                             "likelihood='gaussian'")
        return self.likelihood

    def fit(self, X, y=None):
        """Train on X (n_samples, n_features). Returns self."""
        X = validate_data(self, X, dtype=[np.float64, np.float32], ensure_min_samples=2)
        seed = int(check_random_state(self.random_state).randint(0, 2**31 - 1))
        likelihood = self._likelihood(X)
        cfg = self._config(likelihood, seed, len(X))
        raw = RawData(splits={"train": np.asarray(X, dtype=np.float32)}, labels={"train": None},
                      shape=(X.shape[1],), likelihood=likelihood, source="array")
        data = prepare_dataset(raw, cfg.data, likelihood)
        with seeded(seed):
            model = build_vae(cfg.model, (X.shape[1],), likelihood, init_data=data.train,
                              data_spec=data.spec)
            trainer = Trainer(model, data, cfg, None)
            trainer.fit()
        if trainer.best_weights is not None:
            model.load_state_dict(trainer.best_weights)
        self.model_ = copy.deepcopy(model).to("cpu").double().eval()  # inference in float64
        self.data_spec_ = data.spec
        self.likelihood_ = likelihood
        self.history_ = trainer.history
        self.best_epoch_ = trainer.state.best_epoch
        self._n_features_out = sum(self._levels())
        return self

    def _levels(self) -> list[int]:
        sizes = self.latent_dim if isinstance(self.latent_dim, (list, tuple)) else [self.latent_dim]
        return [int(v) for v in sizes]

    # ---------------------------------------------------------------- inference

    def _model_space(self, X) -> tuple[torch.Tensor, np.dtype]:
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        x = self.data_spec_.transform(torch.tensor(np.asarray(X, dtype=np.float64)))
        return x, X.dtype

    @torch.no_grad()
    def transform(self, X):
        """Posterior means E_q[z|x]: (n_samples, latent_dim)."""
        x, dtype = self._model_space(X)
        return self.model_.encode(x).mean.numpy().astype(dtype, copy=False)

    @torch.no_grad()
    def inverse_transform(self, Z):
        """The means of p(x|z), in the units of X: (n_samples, n_features)."""
        check_is_fitted(self)
        Z = np.asarray(Z, dtype=np.float64)
        width = sum(self._levels())
        if Z.ndim != 2 or Z.shape[1] != width:
            raise ValueError(f"Z must have shape (n_samples, {width}), got {Z.shape}")
        x = self.model_.decode(torch.from_numpy(Z)).mean
        return self.data_spec_.inverse(x).numpy()

    @torch.no_grad()
    def score_samples(self, X):
        """log p(x) per example in nats, in the units of X, importance-sampled with K =
        ``importance_samples`` draws from q(z|x)."""
        x, _ = self._model_space(X)
        k = int(self.importance_samples)
        if k < 1:
            raise ValueError(f"importance_samples must be at least 1, got {k}")
        gen = torch.Generator().manual_seed(0)
        est = importance_sampled(self.model_, x, k, chunk=min(k, 256), generator=gen, shared=True)
        return (est.log_px + self.data_spec_.log_abs_det_jacobian).numpy()

    def score(self, X, y=None):
        """Mean log p(x) per example (higher is better)."""
        return float(np.mean(self.score_samples(X)))

    @torch.no_grad()
    def sample(self, n_samples=1, random_state=None):
        """n new examples: z ~ p(z), then the mean of p(x|z), in the units of X."""
        check_is_fitted(self)
        if int(n_samples) < 1:
            raise ValueError(f"n_samples must be at least 1, got {n_samples}")
        seed = int(check_random_state(random_state).randint(0, 2**31 - 1))
        z = prior_sample(self.model_, int(n_samples), seed)
        return self.data_spec_.inverse(self.model_.decode(z).mean).numpy()

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags
