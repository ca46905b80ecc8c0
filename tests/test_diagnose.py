"""`vaekit diagnose` and `vaekit score` (issue 17): the measurements against models whose
answers are known in closed form, and through the real commands."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.metrics import roc_auc_score
from torch.distributions import MultivariateNormal

from conftest import assert_one_error, run_cli, tiny_config
from vaekit import config as config_mod
from vaekit.diagnose import auroc, elbo_surgery, inference_gaps, kl_per_unit, sharpness
from vaekit.distributions import MIN_SCALE
from vaekit.model import build_vae
from vaekit.runs import train_and_evaluate


def _linear(x_dim, z_dim, sigma):
    cfg = config_mod.merge(config_mod.Config(), {"model": {
        "latent_dim": z_dim, "hidden": [], "activation": "linear", "likelihood": "gaussian",
        "sigma": sigma}}).validate()
    return build_vae(cfg.model, (x_dim,), "gaussian")


def _raw(scale: torch.Tensor) -> torch.Tensor:
    return torch.log(torch.expm1(scale - MIN_SCALE))  # softplus^-1


def _exact_posterior_model():
    """x = W z + N(0, sigma^2 I), z ~ N(0, I), W with orthogonal columns: the posterior is a
    diagonal Gaussian, N(S W^T x / sigma^2, S), S = (I + W^T W / sigma^2)^-1 = diag(1/17, 1/5)."""
    sigma = 0.5
    W = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    m = _linear(3, 2, sigma)
    S = torch.diag(1.0 / (1.0 + (W ** 2).sum(0) / sigma ** 2))
    with torch.no_grad():
        m.decoder.body[0].weight.copy_(W)
        m.decoder.body[0].bias.zero_()
        enc = m.encoder.body[0]  # Linear(3 -> 4): locations, then raw scales
        enc.weight.zero_()
        enc.weight[:2] = S @ W.T / sigma ** 2
        enc.bias.copy_(torch.cat([torch.zeros(2), _raw(S.diagonal().sqrt())]))
    exact = MultivariateNormal(torch.zeros(3), W @ W.T + sigma ** 2 * torch.eye(3))
    return m, exact


def test_gaps_when_the_exact_posterior_is_in_the_family():
    torch.manual_seed(0)
    m, exact = _exact_posterior_model()
    x = exact.sample((40,))
    good = inference_gaps(m, x, steps=300, samples=500)
    assert abs(good["approximation_gap"]) < 3 * good["approximation_gap_se"] + 0.01
    assert abs(good["amortization_gap"]) < 0.02  # the encoder is already optimal
    assert abs(good["log_px"] - float(exact.log_prob(x).mean())) < 0.01
    with torch.no_grad():  # a deliberately poor encoder: q(z|x) = N(0, 1) whatever x is
        m.encoder.body[0].weight.zero_()
        m.encoder.body[0].bias.copy_(torch.cat([torch.zeros(2), _raw(torch.ones(2))]))
    poor = inference_gaps(m, x, steps=1500, samples=500)
    assert poor["amortization_gap"] > 10 * poor["amortization_gap_se"]
    assert abs(poor["approximation_gap"]) < 3 * poor["approximation_gap_se"] + 0.02
    for r in (good, poor):  # the two parts add up to the whole gap
        assert abs(r["amortization_gap"] + r["approximation_gap"] - r["gap"]) < 1e-9
    assert all(p.requires_grad for p in m.parameters())  # the model is left as it was


def test_elbo_surgery_matches_a_closed_form_aggregate_posterior():
    """q(z|x) = N(a x, s^2) for x ~ N(0, 1): q(z) = N(0, a^2 + s^2), so I_q = 1/2 log((a^2 +
    s^2) / s^2) and KL(q(z) || N(0, 1)) = 1/2 (v - 1 - log v), v = a^2 + s^2."""
    torch.manual_seed(1)
    a, s = 1.0, 0.5
    m = _linear(1, 1, 1.0)
    with torch.no_grad():
        enc = m.encoder.body[0]  # Linear(1 -> 2)
        enc.weight.copy_(torch.tensor([[a], [0.0]]))
        enc.bias.copy_(torch.cat([torch.zeros(1), _raw(torch.tensor([s]))]))
    x = torch.randn(2000, 1)
    r = elbo_surgery(m, x, samples=8)
    r.pop("_log_aggregate")
    v = a ** 2 + s ** 2
    assert abs(r["mutual_information"] - 0.5 * math.log(v / s ** 2)) < 0.05
    assert abs(r["marginal_kl"] - 0.5 * (v - 1 - math.log(v))) < 0.03
    assert abs(r["average_kl"] - (r["mutual_information"] + r["marginal_kl"])) < 1e-9
    # a nearly deterministic encoder: I_q of the empirical mixture is capped at log N
    with torch.no_grad():
        enc.bias.copy_(torch.cat([torch.zeros(1), _raw(torch.tensor([1e-3]))]))
    capped = elbo_surgery(m, x[:50], samples=4)
    assert capped["mutual_information"] <= math.log(50) + 1e-9
    assert capped["mutual_information"] > math.log(50) - 0.1


def test_kl_per_unit_sums_to_the_closed_form_kl():
    torch.manual_seed(2)
    m = _linear(3, 2, 0.5)
    x = torch.randn(30, 3)
    per = kl_per_unit(m, x)
    with torch.no_grad():
        total = torch.distributions.kl_divergence(m.encode(x), m.prior).mean()
    assert per.shape == (2,) and abs(float(per.sum()) - float(total)) < 1e-5


def test_unit_kl_against_a_mixture_matches_quadrature_a_few_draws_at_a_time(monkeypatch):
    """Per-unit KL(q(z_u|x) || p(z_u)) against a mixture prior's 1-D marginals (a VampPrior's
    case) by Monte Carlo, computed a few draws at a time so a (draws, B, K, L) block stays
    small, against numerical integration on a grid; the blocks do not change the draws."""
    import vaekit.diagnose as diag
    from vaekit.distributions import diagonal_normal
    from vaekit.priors import DiagonalGaussianMixture

    g = torch.Generator().manual_seed(0)
    loc_k, scale_k = torch.randn(4, 2, generator=g) * 1.5, 0.3 + torch.rand(4, 2, generator=g)
    logits = torch.randn(4, generator=g)
    p = DiagonalGaussianMixture(logits, loc_k, scale_k)
    q = diagonal_normal(torch.randn(3, 2, generator=g), 0.2 + torch.rand(3, 2, generator=g))
    whole = diag._unit_kl(q, p, 20_000, torch.Generator().manual_seed(1))  # one block
    monkeypatch.setattr(diag, "UNIT_KL_ELEMENTS", 3 * 2 * 4 * 7)  # seven draws per block
    blocks = diag._unit_kl(q, p, 20_000, torch.Generator().manual_seed(1))
    assert blocks.shape == (3, 2) and torch.allclose(blocks, whole, atol=1e-6)
    z = torch.linspace(-15, 15, 60_001, dtype=torch.float64)
    w = torch.softmax(logits.double(), 0)
    for b in range(3):
        for u in range(2):
            qz = torch.distributions.Normal(q.mean[b, u].double(), q.stddev[b, u].double())
            pz = sum(w[k] * torch.distributions.Normal(loc_k[k, u].double(), scale_k[k, u].double())
                     .log_prob(z).exp() for k in range(4))
            dens = qz.log_prob(z).exp()
            exact = torch.trapezoid(dens * (qz.log_prob(z) - pz.log()), z)
            assert abs(float(blocks[b, u]) - float(exact)) < 0.03, (b, u)


def test_sharpness_and_auroc():
    flat = torch.zeros(2, 1, 5, 5)
    edges = torch.zeros(2, 1, 5, 5)
    edges[..., :, 2:] = 1.0
    assert sharpness(flat) == 0.0 and sharpness(edges) > 0
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=50), rng.normal(1.0, size=70)
    assert auroc(a, b) == roc_auc_score(np.r_[np.zeros(50), np.ones(70)], np.r_[a, b])


# ------------------------------------------------------------------ the commands


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp("diag") / "run"
    train_and_evaluate(tiny_config(train={"epochs": 4}), path)
    return path


def _snapshot(run):
    return {p.relative_to(run): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_diagnose_through_the_command(run, tmp_path):
    res = run_cli("diagnose", str(run), "--examples", "8", "-k", "100", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    for key in ("kl_per_unit", "active_units", "mutual_information", "marginal_kl",
                "amortization_gap", "approximation_gap", "gap", "examples"):
        assert key in out, key
    assert out["examples"] == 8 and len(out["kl_per_unit"]) == 4
    assert out["mutual_information"] <= out["log_n"] + 1e-9
    assert abs(out["amortization_gap"] + out["approximation_gap"] - out["gap"]) < 1e-9
    assert json.loads((run / "diagnose.json").read_text())["gap"] == out["gap"]
    report = run_cli("report", str(run))
    assert report.returncode == 0, report.stderr
    assert "What this model gets wrong" in (run / "report.html").read_text()


def test_score_writes_a_row_per_example_in_order(run, tmp_path):
    res = run_cli("score", str(run), "-k", "20", "--out", str(tmp_path / "s.csv"))
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader(open(tmp_path / "s.csv")))
    assert len(rows) == json.loads((run / "data.json").read_text())["sizes"]["test"]
    lp = np.array([float(r["log_px"]) for r in rows])
    bpd = np.array([float(r["bits_per_dim"]) for r in rows])
    # row i is test example i: against an independent estimate of each example's log p(x)
    # (the evaluation's, K = 500, other draws), the rows agree example by example, far
    # closer than examples differ from one another (a shuffled order would not)
    import vaekit
    from vaekit.data import dataset_for_spec

    model = vaekit.load_run(run)
    ref = vaekit.evaluate(model, dataset_for_spec(model.data_spec).test, 500, seed=5,
                          per_example=True)["log_px_per_example"]
    assert np.corrcoef(lp, ref)[0, 1] > 0.95
    assert np.median(np.abs(lp - ref)) < 0.15 * ref.std()
    # bits per dimension: -log2 p(x) over the 8 x 8 pixels
    np.testing.assert_allclose(np.exp2(-64 * bpd), np.exp(lp), rtol=1e-4)
    res = run_cli("score", str(run), "-k", "20", "--json", "--split", "valid")
    assert res.returncode == 0 and len(json.loads(res.stdout)["ood_score"]) > 0


@pytest.mark.parametrize("args, words", [
    (["diagnose", "--examples", "0"], ["--examples"]),
    (["score", "--split", "nowhere"], ["--split"]),
    (["score", "--data", "default"], ["do not fit", "(1, 8, 8)"]),
    (["diagnose", "--ood", "swiss-roll"], ["do not fit"]),
    (["score", "--out", "scores.png"], [".csv"]),
])
def test_bad_input_is_one_error_and_leaves_the_run_alone(run, tmp_path, args, words):
    before = _snapshot(run)
    argv = [a if a != "scores.png" else str(tmp_path / a) for a in args]
    assert_one_error(run_cli(argv[0], str(run), *argv[1:]), *words)
    assert _snapshot(run) == before


def test_subsets_are_drawn_at_random_not_the_first_examples(run, monkeypatch):
    """A test file need not be in random order (MNIST's first 5,000 test digits are the
    easier half): the inference gaps and the out-of-distribution scores take a seeded random
    subset of the test set, the same for one seed."""
    from vaekit import diagnose as diag
    from vaekit.data import dataset_for_spec
    from vaekit.rundir import load_run

    seen = []
    real = diag.inference_gaps
    monkeypatch.setattr(diag, "inference_gaps", lambda model, x, *a, **k: seen.append(x) or real(model, x, *a, **k))
    test = dataset_for_spec(load_run(run).data_spec, None).test
    for seed in (0, 0, 1):
        diag.diagnose_run(run, examples=6, importance_samples=5, seed=seed, steps=5)
    rows = [{tuple(r.flatten().tolist()) for r in s} for s in seen]
    index = {tuple(r.flatten().tolist()): i for i, r in enumerate(test)}
    picked = [sorted(index[r] for r in s) for s in rows]
    assert picked[0] == picked[1]  # the same for one seed
    assert picked[0] != picked[2]
    assert picked[0] != list(range(6)) or picked[2] != list(range(6))
    assert max(max(p) for p in picked) >= 6  # reaches past the first six


def test_kl_per_unit_asks_the_priors_family():
    # the per-unit KL comes from the prior's own units: a Gaussian of another scale by its
    # closed form, a Student-t (no formula) by Monte Carlo of its density, each against an
    # independent reference (the textbook formula; scipy's densities by quadrature)
    from torch.distributions import Independent, Normal, StudentT

    from vaekit.diagnose import _unit_kl
    from vaekit.distributions import diagonal_normal

    loc, scale = torch.tensor([[0.3, -1.0]]), torch.tensor([[0.5, 2.0]])
    q = diagonal_normal(loc, scale)
    wide = Independent(Normal(torch.zeros(2), torch.tensor([2.0, 0.5])), 1)
    got = _unit_kl(q, wide, 16, torch.Generator().manual_seed(0))
    sp = torch.tensor([2.0, 0.5])
    ref = torch.log(sp / scale) + (scale ** 2 + loc ** 2) / (2 * sp ** 2) - 0.5
    torch.testing.assert_close(got, ref)
    heavy = Independent(StudentT(3.0, torch.zeros(2), torch.ones(2)), 1)
    got = _unit_kl(q, heavy, 200_000, torch.Generator().manual_seed(0))
    for u in range(2):
        m, s = float(loc[0, u]), float(scale[0, u])
        zz = np.linspace(m - 10 * s, m + 10 * s, 20001)
        lq = stats.norm(m, s).logpdf(zz)
        kl = np.trapezoid(np.exp(lq) * (lq - stats.t(3.0).logpdf(zz)), zz)
        assert float(got[0, u]) == pytest.approx(kl, abs=0.01)
