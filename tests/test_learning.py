"""What training and evaluation compute, against hand computations: active units, the KL
warm-up's schedule, IWAE training against ELBO training, and models that must learn."""

from __future__ import annotations

import json

import numpy as np
import torch

from conftest import tiny_config
from vaekit.data import dataset_for_spec
from vaekit.evaluation import evaluate
from vaekit.objectives import importance_sampled
from vaekit.rundir import load_run
from vaekit.runs import train_and_evaluate
from vaekit.optim import beta_at


def _rows(run):
    return [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]


def test_active_units_against_a_hand_computation(tmp_path):
    """Units whose encoder output ignores x are inactive; the count equals the number of
    units with Var_x(E_q[z_u]) > 0.01 computed here with numpy."""
    train_and_evaluate(tiny_config(model={"latent_dim": 6}, report={"enabled": False}), tmp_path / "r")
    model = load_run(tmp_path / "r")
    last = model.encoder.body[-1]  # Linear(hidden -> 2 * 6): locations, then raw scales
    with torch.no_grad():
        last.weight[[1, 4]] = 0.0  # units 2 and 5: a constant mean
        last.weight[[0, 2, 3, 5]] *= 20.0  # the others: spread wide
    x = dataset_for_spec(model.data_spec).test
    with torch.no_grad():
        means = model.encode(x).mean.double().numpy()
    by_hand = int((means.var(axis=0, ddof=1) > 0.01).sum())
    ev = evaluate(model, x, 2)
    assert ev["active_units"] == by_hand == 4
    assert ev["unit_variances"][1] == ev["unit_variances"][4] == 0.0


def test_kl_warm_up_rises_linearly_per_step(tmp_path):
    cfg = tiny_config(train={"epochs": 3, "warmup_epochs": 2, "beta": 0.8})
    steps = 23  # 1,437 training digits in batches of 64
    assert [beta_at(s, steps, cfg) for s in (0, 22, 45, 46, 100)] == \
        [0.8 * 1 / 46, 0.8 * 23 / 46, 0.8, 0.8, 0.8]
    train_and_evaluate(cfg, tmp_path / "r")
    # each epoch's row gives the weight of its last step
    assert [r["beta"] for r in _rows(tmp_path / "r")] == [0.8 * 23 / 46, 0.8, 0.8]


def test_iwae_training_raises_the_iwae_bound_over_elbo_training(tmp_path):
    """Burda et al. (2016): at an equal number of steps, training L_5 gives a higher L_5 on
    held-out data than training the ELBO."""
    bounds = {}
    for k in (1, 5):
        cfg = tiny_config(train={"epochs": 30, "importance_samples": k}, report={"enabled": False})
        train_and_evaluate(cfg, tmp_path / f"k{k}")
        model = load_run(tmp_path / f"k{k}")
        data = dataset_for_spec(model.data_spec)
        x = torch.cat([data.valid, data.test])  # held out: 360 digits
        est = importance_sampled(model, x.repeat(4, 1, 1, 1), 5, 5,  # 4 estimates each
                                 generator=torch.Generator().manual_seed(0))
        bounds[k] = est.log_px.double()
    diff = (bounds[5] - bounds[1]).view(4, -1).mean(0)  # per digit: paired, same eps
    se = float(diff.std() / diff.numel() ** 0.5)
    assert float(diff.mean()) > 4 * se, (float(diff.mean()), se)


def test_conv_model_learns(tmp_path):
    cfg = tiny_config(model={"architecture": "conv", "conv_channels": [16, 32]},
                      train={"epochs": 8}, report={"enabled": False})
    train_and_evaluate(cfg, tmp_path / "r")
    rows = _rows(tmp_path / "r")
    assert rows[-1]["valid_elbo"] > rows[0]["valid_elbo"] + 3.0


def test_learned_sigma_model_learns_its_noise_level(tmp_path):
    """A Gaussian likelihood with learned sigma on data whose noise is known: the decoder's
    sigma comes down from its start towards the noise, and the ELBO rises."""
    rng = np.random.default_rng(0)
    t = rng.uniform(-1, 1, size=(2000, 1))
    x = np.c_[t, t ** 2, np.sin(3 * t)] + 0.05 * rng.standard_normal((2000, 3))
    np.save(tmp_path / "x.npy", x.astype(np.float32))
    cfg = tiny_config(data={"name": str(tmp_path / "x.npy"), "scaling": "none"},
                      model={"likelihood": "gaussian-learned", "latent_dim": 1, "hidden": [64]},
                      train={"epochs": 40, "batch_size": 100}, report={"enabled": False})
    train_and_evaluate(cfg, tmp_path / "r")
    rows = _rows(tmp_path / "r")
    assert rows[-1]["valid_elbo"] > rows[0]["valid_elbo"] + 1.0
    model = load_run(tmp_path / "r")
    xt = torch.from_numpy(x[:200].astype(np.float32))
    with torch.no_grad():
        sigma = model.decode(model.encode(xt).mean).stddev
    assert float(sigma.median()) < 0.3  # softplus(0) + floor = 0.69 at the start
