"""Every registered component, through the whole contract: a new prior, likelihood,
architecture or model kind is tested by being registered.

Each entry of each registry is built into a small model on scikit-learn's 8x8 digits (the
other components at their defaults), trained for one epoch through `train_and_evaluate`,
evaluated (finite numbers, log p(x) >= ELBO on average), loaded back from its run directory,
and sampled with every sampler. An entry that needs settings of its own gets them from
HINTS; a model kind is chosen by the config, so the test checks that the config it makes
really builds that kind (a new kind without a hint fails here, by name)."""

import math

import pytest
import torch

from conftest import tiny_config

import vaekit
from vaekit import explore
from vaekit.model import model_kind
from vaekit.registry import ARCHITECTURES, LIKELIHOODS, MODEL_KINDS, PRIORS
from vaekit.runs import train_and_evaluate

HINTS = {
    ("prior", "diag-normal"): {"prior_scales": [1.0, 0.5, 2.0, 1.0]},
    ("prior", "vamp"): {"prior_components": 5},
    ("prior", "mixture"): {"prior_components": 3},
    ("architecture", "conv"): {"conv_channels": [8]},
    ("model kind", "hierarchical"): {"latent_dim": [4, 2]},
    ("model kind", "conditional"): {"conditional": True},
}
KEY = {"prior": "prior", "likelihood": "likelihood", "architecture": "architecture"}

CASES = [(reg.kind, name) for reg in (PRIORS, LIKELIHOODS, ARCHITECTURES, MODEL_KINDS)
         for name in reg.names()]


def _model_settings(kind: str, name: str) -> dict:
    settings = dict(HINTS.get((kind, name), {}))
    if kind in KEY:
        settings[KEY[kind]] = name
    return settings


@pytest.mark.parametrize("kind, name", CASES, ids=[f"{k}:{n}" for k, n in CASES])
def test_every_registered_component_trains_evaluates_loads_and_samples(kind, name, tmp_path):
    cfg = tiny_config(model=_model_settings(kind, name), train={"epochs": 1},
                      eval={"importance_samples": 16}, report={"enabled": False})
    if kind == "model kind":
        assert model_kind(cfg.model) == name, f"HINTS has no config that builds {name!r}"
    summary = train_and_evaluate(cfg, tmp_path / "run")
    ev = summary["evaluation"]
    for key in ("elbo", "reconstruction", "kl", "log_px"):
        assert math.isfinite(ev[key]), (key, ev)
    assert ev["log_px"] >= ev["elbo"] - 3 * ev["log_px_stderr"]  # a bound below the estimate
    model = vaekit.load_run(tmp_path / "run")
    if kind == "likelihood":
        assert model.likelihood.name == name
    if kind == "architecture":
        assert vaekit.rundir.read_config(tmp_path / "run").model.architecture == name
    # the loaded model is the trained one: its test evaluation repeats the run's own
    again = vaekit.rundir.evaluate_run(tmp_path / "run", save=False)
    assert again["log_px"] == pytest.approx(ev["log_px"], abs=1e-9)
    samplers = ["prior", "gmm", "class:3"]
    for sampler in samplers:
        x, z = explore.sample(model, 6, sampler if not (model.conditional and sampler == "gmm")
                              else "class:2", seed=0)
        assert x.shape == (6, 1, 8, 8) and z.shape == (6, model.latent_dim), sampler
        assert torch.isfinite(x).all() and torch.isfinite(z).all(), sampler
