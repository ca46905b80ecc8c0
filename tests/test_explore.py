"""Commands on a trained run (sample, reconstruct, encode, interpolate, report, gmm): the
files they write, their shapes, and their values against direct computations."""

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats

import vaekit
from vaekit import explore
from vaekit.runs import train_and_evaluate

from conftest import run_cli, tiny_config

TINY = ["--data", "digits", "--epochs", "3", "--latent-dim", "2", "--set", "model.hidden=[32]",
        "--quiet", "--set", "train.threads=1", "--importance-samples", "8",
        "--set", "report.explorer_grid=8"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp("explore") / "run"
    res = run_cli("train", *TINY, "--out", str(path))
    assert res.returncode == 0, res.stderr
    assert f"report: {path / 'report.html'}" in res.stdout
    return path


def test_train_writes_the_report_with_every_figure(run):
    html = (run / "report.html").read_text()
    for name in ("latent", "manifold", "reconstructions", "samples", "interpolations", "curves",
                 "class_samples"):
        png = run / "figures" / f"{name}.png"
        assert png.is_file() and Image.open(png).size[0] > 100, name
        assert f'id="fig-{name}"' in html
    assert html.count("data:image/png;base64,") >= 9  # figures + explorer plane + sprite
    assert "http://" not in html and "https://" not in html  # nothing fetched: opens offline
    ev = json.loads((run / "evaluation.json").read_text())
    assert f"{ev['log_px']:.3f}" in html and f"K = {ev['importance_samples']}" in html
    latent = json.loads((run / "latent.json").read_text())
    assert f"{latent['knn_accuracy']:.3f}" in html
    # the 5-NN accuracy recomputed by hand from the codes `vaekit encode` writes: each test
    # code takes the majority class of its five nearest training codes
    codes = {}
    for split in ("train", "test"):
        out = run / f"codes-{split}.npz"
        assert run_cli("encode", str(run), "--split", split, "--out", str(out)).returncode == 0
        with np.load(out) as f:
            codes[split] = (f["x"], f["y"])
        out.unlink()
    (tr, ytr), (te, yte) = codes["train"], codes["test"]
    near = np.argsort(((te[:, None, :] - tr[None, :, :]) ** 2).sum(-1), axis=1)[:, :5]
    votes = np.array([np.bincount(ytr[row], minlength=10).argmax() for row in near])
    assert latent["knn_accuracy"] == pytest.approx((votes == yte).mean(), abs=1.5 / len(yte))
    assert set(latent["class_samples"]) == {str(i) for i in range(10)}
    assert 'id="plane"' in html and 'id="sprite"' in html  # 2-D latent: the explorer


def test_no_report_flag(tmp_path):
    res = run_cli("train", *TINY, "--no-report", "--out", str(tmp_path / "r"))
    assert res.returncode == 0, res.stderr
    assert not (tmp_path / "r" / "report.html").exists() and "report:" not in res.stdout


def test_sample_png_npy_and_seeds(run, tmp_path):
    res = run_cli("sample", str(run), "-n", "16", "--out", str(tmp_path / "s.png"))
    assert res.returncode == 0, res.stderr
    assert Image.open(tmp_path / "s.png").size[0] >= 4 * 8
    for name, extra in (("a", []), ("b", []), ("c", ["--seed", "1"]), ("d", ["--draw"])):
        assert run_cli("sample", str(run), "-n", "5", "--out", str(tmp_path / f"{name}.npy"),
                       *extra).returncode == 0
    a, b, c, d = (np.load(tmp_path / f"{n}.npy") for n in "abcd")
    assert a.shape == (5, 1, 8, 8) and a.min() >= 0 and a.max() <= 1
    np.testing.assert_array_equal(a, b)  # same seed, same samples
    assert not np.array_equal(a, c)
    assert set(np.unique(d)) <= {0.0, 1.0}  # draws from a Bernoulli likelihood


def test_samples_are_decoded_prior_draws(run):
    vae = vaekit.load_run(run)
    x, z = explore.sample(vae, 7, "prior", seed=3)
    torch.testing.assert_close(x, vae.decode(z).mean)
    with torch.random.fork_rng():
        torch.manual_seed(3)
        torch.testing.assert_close(z, vae.prior.sample((7,)))


def test_encode_outputs_are_the_posterior_means(run, tmp_path):
    vae = vaekit.load_run(run)
    test = explore.run_split(vae, "test")
    means = vae.encode(test.x).mean.detach().numpy()
    for suffix in ("npy", "npz", "csv"):
        assert run_cli("encode", str(run), "--out", str(tmp_path / f"c.{suffix}")).returncode == 0
    np.testing.assert_allclose(np.load(tmp_path / "c.npy"), means, rtol=1e-6)
    with np.load(tmp_path / "c.npz") as z:
        np.testing.assert_allclose(z["x"], means, rtol=1e-6)
        np.testing.assert_array_equal(z["y"], test.labels.numpy())
    rows = list(csv.reader(open(tmp_path / "c.csv")))
    assert rows[0] == ["z1", "z2", "label"] and len(rows) == 1 + len(means)
    np.testing.assert_allclose(np.array(rows[1:], dtype=float)[:, :2], means, rtol=1e-5, atol=1e-6)
    assert run_cli("encode", str(run), "--stochastic", "--out", str(tmp_path / "s.npy")).returncode == 0
    drawn = np.load(tmp_path / "s.npy")
    sd = vae.encode(test.x).stddev.detach().numpy()
    standardised = (drawn - means) / sd  # z ~ q(z|x) => these are N(0, 1)
    assert abs(standardised.mean()) < 0.15 and abs(standardised.std() - 1) < 0.1


def test_reconstruct_and_interpolate(run, tmp_path):
    vae = vaekit.load_run(run)
    test = explore.run_split(vae, "test")
    assert run_cli("reconstruct", str(run), "-n", "6", "--out", str(tmp_path / "r.npy")).returncode == 0
    r = np.load(tmp_path / "r.npy")
    expected = vae.decode(vae.encode(test.x[:6]).mean).mean.detach().numpy()
    np.testing.assert_allclose(r, expected, rtol=1e-5, atol=1e-6)
    res = run_cli("interpolate", str(run), "--from", "2", "--to", "9", "--steps", "5",
                  "--out", str(tmp_path / "i.npy"))
    assert res.returncode == 0, res.stderr
    path = np.load(tmp_path / "i.npy")
    assert path.shape == (5, 1, 8, 8)
    ends = vae.decode(vae.encode(test.x[[2, 9]]).mean).mean.detach().numpy()
    np.testing.assert_allclose(path[[0, -1]], ends, rtol=1e-5, atol=1e-6)
    za, zb = vae.encode(test.x[[2, 9]]).mean
    middle = vae.decode((za + zb) / 2).mean.detach().numpy()
    np.testing.assert_allclose(path[2], middle, rtol=1e-5, atol=1e-6)
    assert run_cli("reconstruct", str(run), "--out", str(tmp_path / "r.png")).returncode == 0
    assert Image.open(tmp_path / "r.png").size[0] > 100


def test_commands_take_other_data_and_refuse_misfits(run, tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "ok.npy", rng.integers(0, 2, size=(4, 8, 8)).astype(np.float32))
    res = run_cli("encode", str(run), "--data", str(tmp_path / "ok.npy"), "--out", str(tmp_path / "c.npy"))
    assert res.returncode == 0, res.stderr
    assert np.load(tmp_path / "c.npy").shape == (4, 2)
    np.save(tmp_path / "big.npy", rng.random((4, 9, 9)).astype(np.float32))
    res = run_cli("reconstruct", str(run), "--data", str(tmp_path / "big.npy"))
    assert res.returncode == 2 and "(1, 9, 9)" in res.stderr and "(1, 8, 8)" in res.stderr


def test_manifold_grid_is_on_prior_quantiles(run):
    vae = vaekit.load_run(run)
    z1, z2 = explore.prior_quantile_grid(vae, 7)
    np.testing.assert_allclose(z1, stats.norm.ppf(np.linspace(0.05, 0.95, 7)), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(z2, z1)
    _, _, images = explore.manifold(vae, 4)
    assert images.shape == (16, 1, 8, 8)
    # row-major from the top-left cell (lowest z1, highest z2)
    a, b = explore.prior_quantile_grid(vae, 4)
    top_left = vae.decode(torch.tensor([[a[0], b[-1]]], dtype=torch.float32)).mean
    torch.testing.assert_close(images[0], top_left[0])


def test_diag_normal_prior_grid_scales_with_the_prior():
    from vaekit.config import ModelConfig
    from vaekit.model import build_vae

    vae = build_vae(ModelConfig(latent_dim=2, hidden=[8], prior="diag-normal", prior_scales=[0.5, 3.0]),
                    (4,), "gaussian")
    z1, z2 = explore.prior_quantile_grid(vae, 5)
    q = stats.norm.ppf(np.linspace(0.05, 0.95, 5))
    np.testing.assert_allclose(z1, 0.5 * q, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(z2, 3.0 * q, rtol=1e-6, atol=1e-9)


def test_gmm_command_on_codes(run, tmp_path):
    assert run_cli("encode", str(run), "--out", str(tmp_path / "codes.npz")).returncode == 0
    res = run_cli("gmm", str(tmp_path / "codes.npz"), "--components", "3", "--out", str(tmp_path / "g"))
    assert res.returncode == 0, res.stderr
    lines = [l.split() for l in res.stdout.splitlines() if l.strip() and l.split()[0].isdigit()]
    history = [float(l[1]) for l in lines]
    assert len(history) >= 2 and all(b >= a - 1e-9 for a, b in zip(history, history[1:]))
    assert "BIC" in res.stdout
    assert (tmp_path / "g" / "mixture_fit.png").is_file() and (tmp_path / "g" / "log_likelihood.png").is_file()


def test_gmm_command_on_one_dimensional_data(tmp_path):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(m, 0.3, 300) for m in (-3, 0, 2.5)])
    np.save(tmp_path / "x.npy", x)
    res = run_cli("gmm", str(tmp_path / "x.npy"), "-k", "3", "--out", str(tmp_path / "g"))
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "g" / "mixture_fit.png").is_file()
    # the same fit in scikit-learn reaches the same log-likelihood
    from sklearn.mixture import GaussianMixture
    final = float([l for l in res.stdout.splitlines() if l.strip() and l.split()[0].isdigit()][-1].split()[1])
    ref = GaussianMixture(3, tol=1e-8, max_iter=500, n_init=5, random_state=0).fit(x[:, None]).score(x[:, None])
    assert final == pytest.approx(ref, abs=1e-3)


def test_class_samples_are_recognised_as_their_class(tmp_path):
    """Draws from class:LABEL for a model trained on labelled digits are classified as that
    label by a classifier trained on the real data, far above chance (0.1)."""
    cfg = tiny_config(model={"latent_dim": 8, "hidden": [128]}, train={"epochs": 40, "batch_size": 32},
                      report={"enabled": False})
    train_and_evaluate(cfg, tmp_path / "run")
    vae = vaekit.load_run(tmp_path / "run")
    from vaekit.data import dataset_for_spec
    from vaekit.evaluation import latent_metrics

    metrics = latent_metrics(vae, dataset_for_spec(vae.data_spec), samples_per_class=50)
    assert metrics["classifier_test_accuracy"] > 0.9
    assert metrics["class_samples_mean"] > 0.6, metrics["class_samples"]
    assert metrics["knn_accuracy"] > 0.6


def test_swiss_roll_report_shows_data_and_rank_correlation(tmp_path):
    res = run_cli("train", "--data", "swiss-roll", "--epochs", "2", "--latent-dim", "2",
                  "--set", "model.hidden=[32]", "--quiet", "--importance-samples", "4",
                  "--set", "data.max_train=2000", "--out", str(tmp_path / "r"))
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "r" / "figures" / "data_latent.png").is_file()
    latent = json.loads((tmp_path / "r" / "latent.json").read_text())
    rc = latent["rank_correlation"]
    # recomputed from the test codes and the roll's coordinate (the labels `encode` writes):
    # each axis's Spearman correlation, and the best straight direction by scikit-learn's
    # least squares of the coordinate's ranks on the codes
    out = tmp_path / "codes.npz"
    assert run_cli("encode", str(tmp_path / "r"), "--out", str(out)).returncode == 0
    with np.load(out) as f:
        codes, t = f["x"].astype(np.float64), f["y"].astype(np.float64)
    from sklearn.linear_model import LinearRegression

    axes = [stats.spearmanr(codes[:, j], t).statistic for j in range(2)]
    np.testing.assert_allclose(rc["per_dimension"], axes, atol=1e-4)
    line = LinearRegression().fit(codes, stats.rankdata(t)).predict(codes)
    assert rc["best_direction"] == pytest.approx(stats.spearmanr(line, t).statistic, abs=1e-4)
    assert "rank correlation" in (tmp_path / "r" / "report.html").read_text()


def test_rank_correlation_finds_a_rotated_order():
    from vaekit.evaluation import manifold_rank_correlation

    rng = np.random.default_rng(0)
    t = rng.uniform(0, 10, 500)
    codes = np.c_[t, rng.normal(scale=5, size=500)] @ np.array([[0.6, 0.8], [-0.8, 0.6]])  # rotated
    rc = manifold_rank_correlation(codes, t)
    assert rc["best_direction"] > 0.99
    assert max(abs(v) for v in rc["per_dimension"]) < 0.9
    assert manifold_rank_correlation(rng.normal(size=(500, 2)), t)["best_direction"] < 0.2


def test_knn_rank_correlation_sees_a_curved_order_the_straight_one_misses():
    from vaekit.evaluation import manifold_rank_correlation

    rng = np.random.default_rng(0)
    t = rng.uniform(1.5 * np.pi, 4.5 * np.pi, 2000)
    spiral = np.c_[t * np.cos(t), t * np.sin(t)] / 10  # codes on a spiral ordered by t
    rc = manifold_rank_correlation(spiral[1000:], t[1000:], spiral[:1000], t[:1000])
    assert rc["knn"] > 0.99 and rc["best_direction"] < 0.6
    shuffled = manifold_rank_correlation(spiral[1000:], rng.permutation(t[1000:]), spiral[:1000], t[:1000])
    assert abs(shuffled["knn"]) < 0.1


def test_the_reports_ood_reading_recommends_the_corrected_score_only_where_it_does_better():
    from vaekit.report.page import _ood_reading

    better = _ood_reading({"auroc_log_px": 0.421, "auroc_ood_score": 0.966})
    worse = _ood_reading({"auroc_log_px": 0.994, "auroc_ood_score": 0.579})
    assert "Here it does: AUROC 0.966 by S(x) against 0.421" in better
    assert "Here it does not: AUROC 0.579 by S(x) against 0.994" in worse
    assert "the raw likelihood is the better score" in worse and "better score" not in better


def test_messages_and_axes_take_their_nouns_from_the_data(tmp_path, caplog):
    # a table's evaluation speaks of rows, an image run's of images; the latent picture's
    # axes name the principal axes of the codes when there are more than two dimensions
    import logging

    rng = np.random.default_rng(0)
    table = tmp_path / "t.csv"
    np.savetxt(table, rng.normal(size=(120, 4)), delimiter=",", header="a,b,c,d", comments="")
    cfg = vaekit.config.resolve(overrides=[{"data": {"name": str(table)}},
                                           {"model": {"latent_dim": 3, "hidden": [8]}},
                                           {"train": {"epochs": 1, "progress": True, "threads": 1}},
                                           {"eval": {"importance_samples": 2}}])
    with caplog.at_level(logging.INFO, logger="vaekit"):
        train_and_evaluate(cfg, tmp_path / "run")
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("evaluating:")]
    assert said and all(" rows " in m and "images" not in m for m in said)
    from vaekit.data import dataset_for_spec
    from vaekit.report.figures import _latent_figures

    model = vaekit.load_run(tmp_path / "run")
    figs, _ = _latent_figures(model, dataset_for_spec(model.data_spec), 0,
                              np.random.default_rng(0), False)
    assert model.data_spec.nouns == ("row", "rows")
    assert "first two principal axes" in figs[0].reading
