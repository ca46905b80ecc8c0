"""The scikit-learn estimator: scikit-learn's own conformance suite, a Pipeline, GridSearchCV,
and its numbers against vaekit's core."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.utils.estimator_checks import parametrize_with_checks

from vaekit.sklearn import VAE

# A small, fast configuration: the checks fit the estimator a few hundred times.
FAST = dict(latent_dim=2, hidden=(16,), epochs=3, batch_size=32, importance_samples=8, random_state=0)
EXPECTED_FAILURES = {}


@parametrize_with_checks([VAE(**FAST)], expected_failed_checks=lambda est: EXPECTED_FAILURES)
def test_scikit_learn_conformance(estimator, check):
    check(estimator)


def test_readme_pipeline_example_runs_as_written(capsys):
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    code = re.search(r"<!-- sklearn-example -->\n```python\n(.*?)```", readme, re.S).group(1)
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    accuracy = float(re.search(r"digit accuracy from 8 latent features: ([0-9.]+)", out).group(1))
    assert accuracy > 0.8  # the codes carry the digits' identity
    assert re.search(r"best latent size by held-out log p\(x\): (2|8)", out)


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=4, size=(3, 5))
    return centers[rng.integers(3, size=400)] + rng.normal(size=(400, 5)) * [1, 2, 0.5, 1, 3]


def test_transform_and_scores_are_vaekits_own_numbers(blobs):
    import torch

    from vaekit.evaluation import evaluate

    # sigma = 1 (standardised units): importance weights with light tails, so that two
    # independent K = 3000 estimates of the mean log p(x) agree to a few hundredths
    vae = VAE(latent_dim=2, hidden=(32,), epochs=20, sigma=1.0, random_state=0).fit(blobs)
    x = vae.data_spec_.transform(torch.tensor(blobs))
    with torch.no_grad():
        np.testing.assert_allclose(vae.transform(blobs), vae.model_.encode(x).mean.numpy(), rtol=1e-12)
    ours = vae.set_params(importance_samples=3000).score(blobs)
    core = evaluate(vae.model_, x, 3000, log_abs_det_jacobian=vae.data_spec_.log_abs_det_jacobian)
    assert ours == pytest.approx(core["log_px"], abs=0.02)  # two independent estimates
    assert core["elbo"] < ours


def test_scores_are_in_the_units_of_x(blobs):
    """Same data in other units: the model (fitted on standardised features) is the same,
    and log p(x) shifts by exactly -D log c, the log-Jacobian of x -> c x."""
    a = VAE(latent_dim=2, hidden=(32,), epochs=5, random_state=0).fit(blobs)
    b = VAE(latent_dim=2, hidden=(32,), epochs=5, random_state=0).fit(blobs * 100.0)
    np.testing.assert_allclose(b.score_samples(blobs * 100.0),
                               a.score_samples(blobs) - 5 * np.log(100.0), rtol=1e-5)
    np.testing.assert_allclose(b.transform(blobs * 100.0), a.transform(blobs), rtol=1e-4, atol=1e-6)


def test_repeatable_and_shapes_and_errors(blobs):
    a = VAE(**FAST).fit(blobs)
    np.testing.assert_array_equal(a.transform(blobs), VAE(**FAST).fit(blobs).transform(blobs))
    assert not np.allclose(a.transform(blobs), VAE(**{**FAST, "random_state": 1}).fit(blobs).transform(blobs))
    assert a.inverse_transform(a.transform(blobs[:7])).shape == (7, 5)
    assert a.sample(11, random_state=0).shape == (11, 5)
    assert a.get_feature_names_out().tolist() == ["vae0", "vae1"]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        VAE(likelihood="bernoulli").fit(blobs)
    with pytest.raises(ValueError, match="model.latent_dim"):
        VAE(latent_dim=0).fit(blobs)


def test_training_goes_through_vaekits_trainer(blobs, monkeypatch):
    from vaekit import train

    calls = []
    real = train.Trainer.fit
    monkeypatch.setattr(train.Trainer, "fit", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    VAE(**FAST).fit(blobs)
    assert calls == [1]


def test_weight_average_is_the_fitted_model(blobs, monkeypatch):
    # ema_decay: the estimator's model is the trainer's weight average, not its last weights
    from vaekit import train

    seen = []
    real = train.Trainer.fit

    def fit(self, *a, **k):
        out = real(self, *a, **k)
        seen.append(({n: p.detach().clone() for n, p in self.model.named_parameters()},
                     dict(self.ema.module.named_parameters())))
        return out

    monkeypatch.setattr(train.Trainer, "fit", fit)
    vae = VAE(**{**FAST, "ema_decay": 0.9}).fit(blobs)
    trained, average = seen[0]
    for k, v in vae.model_.named_parameters():
        torch.testing.assert_close(v, average[k].double(), rtol=0, atol=0)
    assert not all(torch.equal(average[k], trained[k]) for k in average)
    with pytest.raises(ValueError, match=r"train.ema_decay"):
        VAE(**{**FAST, "ema_decay": 1.5}).fit(blobs)


def test_weight_decay_reaches_the_optimiser(blobs, monkeypatch):
    from vaekit import train

    seen = []
    real = train.Trainer.fit

    def fit(self, *a, **k):
        seen.append(sorted(g["weight_decay"] for g in self.optimizer.param_groups))
        return real(self, *a, **k)

    monkeypatch.setattr(train.Trainer, "fit", fit)
    VAE(**{**FAST, "weight_decay": 0.25}).fit(blobs)
    VAE(**FAST).fit(blobs)
    assert seen == [[0.0, 0.25], [0.0]]
    with pytest.raises(ValueError, match=r"train.weight_decay"):
        VAE(**{**FAST, "weight_decay": -1.0}).fit(blobs)


def test_early_stopping_keeps_the_best_validation_epoch(blobs):
    vae = VAE(latent_dim=2, hidden=(32,), epochs=40, early_stopping=True, patience=3,
              random_state=0).fit(blobs)
    valid = [r["valid_objective"] for r in vae.history_]
    assert vae.best_epoch_ == 1 + int(np.argmax(valid))
    assert len(vae.history_) <= 40


def test_a_hierarchical_estimator(blobs):
    """latent_dim as a list of level sizes: transform gives every level's ancestral means."""
    h = VAE(**{**FAST, "latent_dim": [3, 2]}).fit(blobs)
    assert h.transform(blobs[:4]).shape == (4, 5)
    assert h.inverse_transform(h.transform(blobs[:4])).shape == (4, 5)
    assert np.isfinite(h.score_samples(blobs[:10])).all()
    assert h.get_feature_names_out().tolist() == [f"vae{i}" for i in range(5)]
