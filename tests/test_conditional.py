"""Conditional VAEs (issue 16): q(z|x, y), p(x|z, y), sampling a class with --label."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import assert_one_error, run_cli, tiny_config
from vaekit import config as config_mod
from vaekit.conditional import ConditionalVAE
from vaekit.data import dataset_for_spec
from vaekit.evaluation import evaluate
from vaekit.objectives import elbo
from vaekit.rundir import load_run
from vaekit.runs import train_and_evaluate
from vaekit.checkpoint import LATEST


def _cfg(**train):
    return tiny_config(model={"conditional": True}, train={"epochs": 3, **train},
                       report={"enabled": False})


def test_the_class_reaches_encoder_and_decoder(tmp_path):
    train_and_evaluate(_cfg(), tmp_path / "run")
    model = load_run(tmp_path / "run")
    assert isinstance(model, ConditionalVAE) and model.num_classes == 10
    x = torch.rand(4, 1, 8, 8).round()
    y3, y5 = torch.full((4,), 3), torch.full((4,), 5)
    q3, q5 = model.encode(x, y3), model.encode(x, y5)
    assert not torch.allclose(q3.mean, q5.mean)
    z = q3.mean
    assert not torch.allclose(model.decode(z, y3).mean, model.decode(z, y5).mean)
    # the fixed-class view has the unconditional contract, and the objective runs on it
    view = model.given(y3)
    torch.testing.assert_close(view.encode(x).mean, q3.mean)
    assert elbo(view, x).elbo.shape == (4,)
    # one-hot weights interpolate between classes: the ends are the classes themselves
    half = 0.5 * (model.condition(y3) + model.condition(y5))
    assert model.decode(z, half).mean.shape == (4, 1, 8, 8)
    torch.testing.assert_close(model.decode(z, model.condition(y3)).mean, model.decode(z, y3).mean)
    with pytest.raises(ValueError, match="needs each example's class"):
        model.encode(x)


def test_evaluation_uses_each_examples_class(tmp_path):
    train_and_evaluate(_cfg(), tmp_path / "run")
    model = load_run(tmp_path / "run")
    data = dataset_for_spec(model.data_spec)
    right = evaluate(model, data.test[:60], 50, labels=data.test_labels[:60])["log_px"]
    wrong = evaluate(model, data.test[:60], 50, labels=(data.test_labels[:60] + 1) % 10)["log_px"]
    assert right > wrong  # the true class explains the digit better
    with pytest.raises(ValueError, match="conditional"):
        evaluate(model, data.test[:10], 5)


def test_conditional_run_resumes_bit_identical(tmp_path):
    cfg = _cfg(epochs=3)
    train_and_evaluate(cfg, tmp_path / "full")

    def stop(trainer):
        if trainer.state.step == 30:
            trainer.request_stop()

    train_and_evaluate(cfg, tmp_path / "cut", callbacks={"on_batch_end": [stop]})
    train_and_evaluate(cfg, tmp_path / "cut", resume=True)
    a, b = load_file(str(tmp_path / "full" / LATEST)), load_file(str(tmp_path / "cut" / LATEST))
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("model."))


def test_sample_a_class_through_the_command(tmp_path):
    run = tmp_path / "run"
    res = run_cli("train", "--data", "digits", "--epochs", "60", "--latent-dim", "2", "--quiet",
                  "--set", "model.conditional=true", "--set", "model.hidden=[64]",
                  "--importance-samples", "5", "--out", str(run))
    assert res.returncode == 0, res.stderr
    latent = json.loads((run / "latent.json").read_text())
    assert set(latent["label_samples"]) == set(latent["class_samples"])
    assert "label_samples.png" in {p.name for p in (run / "figures").iterdir()}
    # the report reads a conditional model's codes as style, never as class regions
    html = (run / "report.html").read_text()
    assert "they are not class regions" in html and "Where colours gather" not in html
    res = run_cli("sample", str(run), "--label", "7", "-n", "30", "--out", str(tmp_path / "s.npy"))
    assert res.returncode == 0, res.stderr
    x = np.load(tmp_path / "s.npy").reshape(30, -1)
    # judged by a 5-NN classifier on real digits: most are sevens
    from sklearn.datasets import load_digits
    from sklearn.neighbors import KNeighborsClassifier

    X, y = load_digits(return_X_y=True)
    judge = KNeighborsClassifier(5).fit(X / 16.0, y)
    assert (judge.predict(x) == 7).mean() > 0.5
    for args in (["encode", "--out", "c.csv"], ["reconstruct", "-n", "4", "--out", "r.png"],
                 ["interpolate", "--from", "0", "--to", "1", "--out", "i.npy"],
                 ["sample", "--sampler", "class:3", "-n", "4", "--out", "k.png"],
                 ["evaluate", "-k", "5"]):
        out = [a if not a.endswith((".png", ".npy", ".csv")) else str(tmp_path / a) for a in args]
        res = run_cli(out[0], str(run), *out[1:])
        assert res.returncode == 0, (args, res.stderr)
    assert_one_error(run_cli("sample", str(run), "--label", "eleven", "--out", str(tmp_path / "x.png")),
                     "unknown class")
    assert_one_error(run_cli("sample", str(run), "--sampler", "gmm", "--out", str(tmp_path / "x.png")),
                     "--label")


def test_conditional_needs_labelled_data(tmp_path):
    res = run_cli("train", "--data", "swiss-roll", "--set", "model.conditional=true",
                  "--epochs", "1", "--out", str(tmp_path / "r"))
    assert_one_error(res, "model.conditional", "class labels")
    assert not (tmp_path / "r").exists()
    with pytest.raises(config_mod.ConfigError, match="one latent level"):
        config_mod.resolve(overrides=[{"model": {"conditional": True, "latent_dim": [4, 2]}}])
    with pytest.raises(config_mod.ConfigError, match="VampPrior"):
        config_mod.resolve(overrides=[{"model": {"conditional": True, "prior": "vamp"}}])


def test_label_on_an_unconditional_run_points_to_the_class_sampler(tmp_path):
    run = tmp_path / "run"
    train_and_evaluate(tiny_config(), run)
    assert_one_error(run_cli("sample", str(run), "--label", "3", "--out", str(tmp_path / "x.png")),
                     "--sampler class:3")


def test_separate_inputs_read_the_class_through_its_own_first_layer(tmp_path):
    cfg = tiny_config(model={"conditional": True, "separate_inputs": True, "hidden": [16]},
                      train={"epochs": 2}, report={"enabled": False})
    train_and_evaluate(cfg, tmp_path / "run")
    model = load_run(tmp_path / "run")
    head, body = model.encoder["head"][0], model.decoder.body[0]
    assert head.parts == [64, 10] and body.parts == [model.latent_dim, 10]
    x = torch.rand(4, 1, 8, 8).round()
    y3, y5 = torch.full((4,), 3), torch.full((4,), 5)
    # x's half of the encoder's first layer does not see the class; the class's half does
    h3 = head(torch.cat([x.flatten(1), model.condition(y3)], -1))
    h5 = head(torch.cat([x.flatten(1), model.condition(y5)], -1))
    torch.testing.assert_close(h3[:, :16], h5[:, :16])
    assert not torch.allclose(h3[:, 16:], h5[:, 16:])
    assert not torch.allclose(model.encode(x, y3).mean, model.encode(x, y5).mean)
