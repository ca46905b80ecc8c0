"""train.restarts: N initialisations, the best by validation objective trained on (issue 21)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import run_cli, tiny_config
from vaekit import config as config_mod
from vaekit.errors import ConfigError
from vaekit.runs import RESTARTS, restart_seed, train_and_evaluate
from vaekit.checkpoint import BEST, LATEST


def _cfg(**train):
    return tiny_config(train={"epochs": 4, "restarts": 3, "restart_epochs": 2, **train},
                       report={"enabled": False})


def _rows(path):
    return [json.loads(l) for l in path.read_text().splitlines()]


def test_the_kept_restart_is_the_best_by_validation_and_training_goes_on_from_it(tmp_path):
    run = tmp_path / "run"
    summary = train_and_evaluate(_cfg(), run)
    results = summary["restarts"]
    assert [r["restart"] for r in results] == [0, 1, 2]
    assert [r["seed"] for r in results] == [restart_seed(0, r) for r in range(3)]
    assert len({r["best_valid_objective"] for r in results}) == 3  # different initialisations
    # each restart's number is the best validation objective in its own metrics
    for r in results:
        rows = _rows(run / RESTARTS / str(r["restart"]) / "metrics.jsonl")
        assert len(rows) == 2
        assert r["best_valid_objective"] == max(row["valid_objective"] for row in rows)
    kept = max(results, key=lambda r: r["best_valid_objective"])["restart"]
    assert summary["kept_restart"] == kept
    # the run's first epochs are the kept restart's, then it trains on to epoch 4
    main = _rows(run / "metrics.jsonl")
    assert [r["epoch"] for r in main] == [1, 2, 3, 4]
    assert main[:2] == _rows(run / RESTARTS / str(kept) / "metrics.jsonl")
    assert summary["epochs"] == 4
    assert summary["train_seconds"] >= sum(r["train_seconds"] for r in results)


def test_restart_zero_is_the_run_its_seed_gives_alone(tmp_path):
    """With restart_epochs = epochs, restart 0 is exactly a plain run of the same seed, and
    its validation numbers use that run's eps."""
    plain = tiny_config(train={"epochs": 2}, report={"enabled": False})
    train_and_evaluate(plain, tmp_path / "plain")
    train_and_evaluate(tiny_config(train={"epochs": 2, "restarts": 2}, report={"enabled": False}),
                       tmp_path / "multi")
    a = load_file(str(tmp_path / "plain" / LATEST))
    b = load_file(str(tmp_path / "multi" / RESTARTS / "0" / LATEST))
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("model."))
    assert _rows(tmp_path / "plain" / "metrics.jsonl")[-1]["valid_elbo"] == \
        _rows(tmp_path / "multi" / RESTARTS / "0" / "metrics.jsonl")[-1]["valid_elbo"]


@pytest.mark.parametrize("where", [(1, 3), (2, 5)])  # in the second restart; in the third, mid-epoch
def test_interrupted_multi_restart_run_resumes_to_the_uninterrupted_end(tmp_path, where):
    restart, step = where
    cfg = _cfg()
    full = train_and_evaluate(cfg, tmp_path / "full")

    def stop(trainer):
        if trainer.run_dir.name == str(restart) and trainer.state.step == step:
            trainer.request_stop()

    cut = train_and_evaluate(cfg, tmp_path / "cut", callbacks={"on_batch_end": [stop]})
    assert cut["interrupted"] and not (tmp_path / "cut" / LATEST).exists()
    resumed = train_and_evaluate(cfg, tmp_path / "cut", resume=True)
    assert resumed["kept_restart"] == full["kept_restart"]
    for name in (LATEST, BEST):
        a, b = load_file(str(tmp_path / "full" / name)), load_file(str(tmp_path / "cut" / name))
        keys = [k for k in a if k.startswith(("model.", "optim."))]
        assert keys and all(torch.equal(a[k], b[k]) for k in keys)
    assert [r["best_valid_objective"] for r in resumed["restarts"]] == \
           [r["best_valid_objective"] for r in full["restarts"]]


def test_restarts_through_the_command_and_the_report(tmp_path):
    run = tmp_path / "run"
    res = run_cli("train", "--data", "digits", "--epochs", "2", "--quiet", "--importance-samples", "2",
                  "--set", "train.restarts=2", "--set", "train.restart_epochs=1",
                  "--set", "model.hidden=[16]", "--out", str(run))
    assert res.returncode == 0, res.stderr
    summary = json.loads((run / "summary.json").read_text())
    html = (run / "report.html").read_text()
    assert f"restart {summary['kept_restart'] + 1} of 2" in html


def test_restart_settings_are_checked():
    with pytest.raises(ConfigError):
        config_mod.merge(config_mod.Config(), {"train": {"restarts": 0}}).validate()
    with pytest.raises(ConfigError):
        config_mod.merge(config_mod.Config(), {"train": {"restart_epochs": -1}}).validate()


def test_restarts_in_worker_processes_end_where_in_process_restarts_do(tmp_path):
    """train.restart_jobs = 2 trains the restarts in two worker processes: every restart,
    and so the run, is bit-identical to training them one after the other."""
    one = train_and_evaluate(_cfg(restarts=2, restart_epochs=1, epochs=2), tmp_path / "one")
    two = train_and_evaluate(_cfg(restarts=2, restart_epochs=1, epochs=2, restart_jobs=2), tmp_path / "two")
    assert [r["best_valid_objective"] for r in one["restarts"]] == \
           [r["best_valid_objective"] for r in two["restarts"]]
    a, b = load_file(str(tmp_path / "one" / LATEST)), load_file(str(tmp_path / "two" / LATEST))
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith(("model.", "optim.")))
