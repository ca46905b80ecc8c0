"""The real `vaekit` command: a tiny run per command, and one clear error per mistake."""

import json

import numpy as np
import pytest

from conftest import assert_one_error, run_cli

TINY = ["--data", "digits", "--epochs", "2", "--latent-dim", "4", "--set", "model.hidden=[32]",
        "--quiet", "--set", "train.threads=1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("cli") / "run"
    res = run_cli("train", *TINY, "--out", str(run), "--importance-samples", "16")
    assert res.returncode == 0, res.stderr
    assert "test ELBO" in res.stdout and "log p(x) (K = 16)" in res.stdout
    return run


def test_evaluate_json_has_the_documented_keys(trained):
    res = run_cli("evaluate", str(trained), "--importance-samples", "20", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    for key in ("elbo", "reconstruction", "kl", "log_px", "importance_samples", "gap",
                "active_units", "n_test"):
        assert key in out
    assert out["importance_samples"] == 20 and out["n_test"] == 180
    assert out["log_px"] >= out["elbo"]
    assert out["elbo"] == pytest.approx(out["reconstruction"] - out["kl"], abs=1e-6)


def test_evaluate_is_reproducible_with_its_seed(trained):
    a, b, c = (json.loads(run_cli("evaluate", str(trained), "-k", "5", "--seed", seed,
                                  "--json").stdout) for seed in ("7", "7", "8"))
    assert a["seed"] == b["seed"] == 7 and c["seed"] == 8
    assert a["log_px"] == b["log_px"]  # one seed, one estimate
    assert a["log_px"] != c["log_px"]  # the seed is used: another one draws other samples


def test_binarized_mnist_log_px_is_above_the_elbo(tmp_path, data_dir):
    run = tmp_path / "bmnist"
    res = run_cli("train", "--data", "binarized-mnist", "--data-dir", str(data_dir), "--epochs", "1",
                  "--set", "data.max_train=3000", "--set", "model.hidden=[64]", "--quiet",
                  "--importance-samples", "2", "--out", str(run))
    assert res.returncode == 0, res.stderr
    res = run_cli("evaluate", str(run), "--importance-samples", "30", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["n_test"] == 10_000 and out["log_px"] > out["elbo"]
    assert -400 < out["elbo"] < -80


def test_unknown_option_value(tmp_path):
    assert_one_error(run_cli("train", "--likelihood", "poisson", "--out", str(tmp_path / "r")),
                      "model.likelihood", "poisson")
    assert not (tmp_path / "r").exists()


def test_unknown_config_key_suggests_the_closest(tmp_path):
    assert_one_error(run_cli("train", "--set", "model.latnt_dim=2"), "model.latnt_dim", "model.latent_dim")


def test_missing_run_directory(tmp_path):
    assert_one_error(run_cli("evaluate", str(tmp_path / "nope")), "does not exist")


def test_bernoulli_on_values_outside_unit_interval(tmp_path):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32))
    res = run_cli("train", "--data", str(tmp_path / "x.npy"), "--likelihood", "bernoulli",
                  "--out", str(tmp_path / "r"))
    assert_one_error(res, "Bernoulli", "[0, 1]")
    assert not (tmp_path / "r").exists()


def test_existing_run_is_never_overwritten(trained):
    before = {p: p.read_bytes() for p in trained.rglob("*") if p.is_file()}
    assert_one_error(run_cli("train", *TINY, "--out", str(trained)), "already exists", "--resume")
    after = {p: p.read_bytes() for p in trained.rglob("*") if p.is_file()}
    assert before == after


def test_bad_argument_type_is_one_line():
    assert_one_error(run_cli("train", "--epochs", "many"), "--epochs")


def test_datasets_and_presets_list(data_dir):
    res = run_cli("datasets", "--data-dir", str(data_dir))
    assert res.returncode == 0 and "binarized-mnist" in res.stdout and "swiss-roll" in res.stdout
    res = run_cli("presets")
    assert res.returncode == 0 and "mnist-mlp" in res.stdout


def _epochs(run):
    """metrics.jsonl without its timings: what a bit-exact continuation repeats."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("seconds", "images_per_second")}
            for r in rows]


def _files(run):
    return {p.relative_to(run): p.read_bytes() for p in run.rglob("*")
            if p.is_file() and p.name != ".lock"}


def test_a_fork_continues_a_copy_from_the_latest_or_best_checkpoint(tmp_path):
    import shutil

    quick = ["--quiet", "--no-report", "--importance-samples", "4"]
    run, two = tmp_path / "run", tmp_path / "two"
    assert run_cli("train", *TINY, "--out", str(run), *quick).returncode == 0
    shutil.copytree(run, two)  # the run as it was after epoch 2
    # a third epoch at a far too high rate: the best checkpoint stays at epoch 2
    assert run_cli("train", "--resume", str(run), "--epochs", "3", "--lr", "0.5",
                   *quick).returncode == 0
    assert json.loads((run / "summary.json").read_text())["best_epoch"] == 2
    before = _files(run)
    # from the best checkpoint: the same as continuing the run as it was at epoch 2
    best = tmp_path / "best"
    res = run_cli("train", "--resume", str(run), "--from", "best", "--out", str(best),
                  "--epochs", "4", "--lr", "0.001", *quick)
    assert res.returncode == 0, res.stderr
    assert run_cli("train", "--resume", str(two), "--epochs", "4", "--lr", "0.001",
                   *quick).returncode == 0
    assert [r["epoch"] for r in _epochs(best)] == [1, 2, 3, 4]
    assert _epochs(best) == _epochs(two)
    from vaekit.rundir import read_config

    origin = read_config(best).origin  # the branch says what it continued and changed
    assert (origin.run, origin.checkpoint, origin.epoch) == (str(run), "best", 2)
    assert origin.changed == ["train.epochs: 3 -> 4", "train.lr: 0.5 -> 0.001"]
    assert read_config(run).origin.run == ""  # the source is not a branch
    # from the latest checkpoint (the default): the same as continuing the run in place
    latest, same = tmp_path / "latest", tmp_path / "same"
    shutil.copytree(run, same)
    res = run_cli("train", "--resume", str(run), "--out", str(latest), "--epochs", "4", *quick)
    assert res.returncode == 0, res.stderr
    assert run_cli("train", "--resume", str(same), "--epochs", "4", *quick).returncode == 0
    assert _epochs(latest) == _epochs(same) and _epochs(latest)[:3] == _epochs(run)
    assert _files(run) == before  # the source run is only read
    # mistakes: one line each, nothing written
    assert_one_error(run_cli("train", "--resume", str(run), "--from", "best", *quick),
                     "--from best needs --out")
    assert_one_error(run_cli("train", *TINY, "--from", "best", "--out", str(tmp_path / "x")),
                     "--resume")
    assert_one_error(run_cli("train", "--resume", str(run), "--out", str(best), *quick),
                     "already exists")
    (same / "checkpoints" / "best.safetensors").write_bytes(b"not a checkpoint")
    assert_one_error(run_cli("train", "--resume", str(same), "--from", "best", "--out",
                             str(tmp_path / "y"), *quick), "not a vaekit checkpoint")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    assert _files(run) == before and not list(tmp_path.glob(".*fork*"))


def test_refit_run_trains_on_the_validation_split_and_keeps_its_last_epoch(tmp_path):
    # data.refit: nothing is held out but the test set, so no validation numbers are logged
    # and the kept model is the last epoch's; asking for the validation split is refused, and
    # a resume may not switch refit off (the data would change under the run)
    run = tmp_path / "refit"
    res = run_cli("train", *TINY, "--epochs", "3", "--set", "data.refit=true", "--out", str(run),
                  "--importance-samples", "8")
    assert res.returncode == 0, res.stderr
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and not any(k.startswith("valid_") for r in rows for k in r)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["refit"] and summary["best_epoch"] == 3
    spec = json.loads((run / "data.json").read_text())
    assert spec["refit"] and spec["sizes"]["valid"] == 0 and spec["sizes"]["train"] == 1797 - 180
    assert "the last: it trained on the validation split too" in (run / "report.html").read_text()
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert_one_error(run_cli("evaluate", str(run), "--split", "valid"), "data.refit", "--split test")
    assert_one_error(run_cli("train", "--resume", str(run), "--epochs", "4", "--set",
                             "data.refit=false"), "cannot change", "data.refit")
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_evaluate_on_the_validation_split_says_so(trained):
    # `evaluate --split valid` reports the validation set under its own name, never as the
    # test set's numbers, and leaves the run's recorded (test) evaluation as it was
    saved = [(trained / f).read_bytes() for f in ("evaluation.json", "evaluation-log-px.npy")]
    res = run_cli("evaluate", str(trained), "--split", "valid", "-k", "200")
    assert res.returncode == 0, res.stderr
    assert "validation ELBO" in res.stdout and "validation examples" in res.stdout
    assert "test ELBO" not in res.stdout and "test examples" not in res.stdout
    out = json.loads(run_cli("evaluate", str(trained), "--split", "valid", "-k", "200",
                             "--json").stdout)
    last = json.loads((trained / "metrics.jsonl").read_text().splitlines()[-1])
    # the trainer's validation ELBO of the last epoch (one fixed eps per example) and this
    # 200-sample estimate are two estimates of the same mean over the same examples
    assert out["split"] == "valid"
    assert out["elbo"] == pytest.approx(last["valid_elbo"], abs=0.5)
    assert [(trained / f).read_bytes() for f in ("evaluation.json", "evaluation-log-px.npy")] == saved


def test_an_interrupted_evaluate_continues_where_it_stopped(trained, monkeypatch, capsys):
    """Ctrl-C during `vaekit evaluate` keeps the batches done in the run; the same command
    then continues from there, with the numbers of an evaluation never interrupted."""
    from vaekit import evaluation
    from vaekit.cli import main

    monkeypatch.setattr(evaluation, "plan_chunks", lambda *a, **k: (50, 3))  # 4 batches of 180
    real, calls = evaluation.importance_sampled, []

    def stopped(model, x, *args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(len(x))
        return real(model, x, *args, **kwargs)

    command = ["evaluate", str(trained), "-k", "6", "--json"]
    with monkeypatch.context() as m:
        m.setattr(evaluation, "importance_sampled", stopped)
        assert main(command) == 130
    kept = trained / "evaluations" / "test-k6-seed1234.partial.safetensors"
    assert f"progress is kept in {kept}: run the same command again" in capsys.readouterr().err
    assert main(command) == 0
    resumed = json.loads(capsys.readouterr().out)
    assert not kept.exists()
    assert main(command) == 0
    fresh = json.loads(capsys.readouterr().out)
    assert calls == [50, 50]
    assert {k: resumed[k] for k in ("log_px", "elbo", "kl", "unit_variances")} == \
        {k: fresh[k] for k in ("log_px", "elbo", "kl", "unit_variances")}
    saved = json.loads((trained / "evaluations" / "test-k6-seed1234.json").read_text())
    assert saved["log_px"] == fresh["log_px"] and saved["seed"] == 1234
    assert json.loads((trained / "evaluation.json").read_text())["importance_samples"] == 16


def test_evaluate_takes_the_runs_settings_and_never_replaces_its_result_unless_asked(tmp_path):
    """`vaekit evaluate RUN` defaults to the run's [eval] (K, seed, chunk size), not to
    defaults of its own; with other settings the result goes to a file named by them, and
    the run's own result (what the report shows) changes only with --update, which also
    records the settings in the run's config so the two agree."""
    from vaekit.rundir import read_config

    run = tmp_path / "run"
    res = run_cli("train", *TINY, "--out", str(run), "-k", "7", "--set", "eval.seed=99",
                  "--no-report")
    assert res.returncode == 0, res.stderr
    assert read_config(run).eval.importance_samples == 7  # train's -k is recorded
    own = json.loads((run / "evaluation.json").read_text())
    assert (own["importance_samples"], own["seed"], own["split"]) == (7, 99, "test")
    before = {f: (run / f).read_bytes() for f in ("evaluation.json", "evaluation-log-px.npy",
                                                   "config.toml")}
    again = json.loads(run_cli("evaluate", str(run), "--json").stdout)
    assert (again["importance_samples"], again["seed"]) == (7, 99)
    assert again["log_px"] == own["log_px"]  # the run's own settings give its own numbers
    other = json.loads(run_cli("evaluate", str(run), "-k", "3", "--seed", "1234", "--json").stdout)
    assert other["saved_as"] == str(run / "evaluations" / "test-k3-seed1234.json")
    assert json.loads((run / "evaluations" / "test-k3-seed1234.json").read_text())["log_px"] == \
        other["log_px"] != own["log_px"]
    assert {f: (run / f).read_bytes() for f in before} == before
    assert run_cli("report", str(run)).returncode == 0
    assert "K = 7" in (run / "report.html").read_text()
    res = run_cli("evaluate", str(run), "-k", "3", "--seed", "1234", "--update")
    assert res.returncode == 0 and f"written to {run / 'evaluation.json'}" in res.stdout
    assert json.loads((run / "evaluation.json").read_text())["log_px"] == other["log_px"]
    assert (read_config(run).eval.importance_samples, read_config(run).eval.seed) == (3, 1234)


def test_ctrl_c_in_trainings_test_evaluation_is_continued_by_resume(tmp_path, monkeypatch, capsys):
    """Ctrl-C during the test evaluation that ends `vaekit train` (K = 5000 for the presets:
    hours for a big model on a CPU) keeps its progress; `vaekit train --resume RUN` goes
    straight on with it and records the evaluation an uninterrupted one gives."""
    from vaekit import evaluation
    from vaekit.cli import main
    from vaekit.rundir import evaluate_run

    monkeypatch.setattr(evaluation, "plan_chunks", lambda *a, **k: (50, 3))  # 4 batches of 180
    real, calls = evaluation.importance_sampled, []

    def stopped(model, x, *args, **kwargs):
        if len(x) > 1:  # not the one-image calls that size chunks
            if len(calls) == 3:
                raise KeyboardInterrupt
            calls.append(len(x))
        return real(model, x, *args, **kwargs)

    run = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(evaluation, "importance_sampled", stopped)
        assert main(["train", *TINY, "--out", str(run), "--importance-samples", "6", "--no-report"]) == 130
    assert f"Continue with: vaekit train --resume {run}" in capsys.readouterr().err
    assert calls == [50, 50, 50] and not (run / "evaluation.json").exists()
    assert main(["train", "--resume", str(run), "--importance-samples", "6", "--quiet"]) == 0
    assert not (run / "evaluation-test.partial.safetensors").exists()
    kept = json.loads((run / "evaluation.json").read_text())
    assert kept["resumed_from"] == 150
    fresh = evaluate_run(run, 6, save=False)
    assert {k: kept[k] for k in ("log_px", "elbo", "kl", "unit_variances")} == \
        {k: fresh[k] for k in ("log_px", "elbo", "kl", "unit_variances")}
    epochs = [json.loads(l)["epoch"] for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]  # the resume trained nothing more
