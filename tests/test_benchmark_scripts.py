"""The benchmark scripts answer bad input as the CLI does: one line, exit status 2."""

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import assert_one_error

LIKELIHOOD = Path(__file__).resolve().parents[1] / "benchmarks" / "likelihood.py"


@pytest.mark.parametrize("make, words", [
    (lambda tmp: tmp / "missing", ["does not exist", "--out"]),
    (lambda tmp: (tmp / "f.txt").write_text("x") and tmp / "f.txt", ["not a run directory"]),
    (lambda tmp: (tmp / "empty").mkdir() or tmp / "empty", ["not a complete vaekit run", "config.toml"]),
])
def test_likelihood_benchmark_rejects_a_bad_run_directory(tmp_path, make, words):
    run = make(tmp_path)
    res = subprocess.run([sys.executable, str(LIKELIHOOD), "--run", str(run), "--reuse"],
                         capture_output=True, text=True, timeout=300)
    assert_one_error(res, str(run), *words)


def test_likelihood_benchmark_compares_runs_image_by_image(tmp_path):
    import json

    import numpy as np

    from conftest import run_cli

    runs = []
    for seed in (0, 1):
        run = tmp_path / f"s{seed}"
        res = run_cli("train", "--data", "digits", "--epochs", "2", "--latent-dim", "3",
                      "--set", "model.hidden=[16]", "--set", "train.threads=1", "--seed", str(seed),
                      "--importance-samples", "12", "--quiet", "--no-report", "--out", str(run))
        assert res.returncode == 0, res.stderr
        # the run keeps each test image's estimate beside evaluation.json, in test-set order
        ev = json.loads((run / "evaluation.json").read_text())
        values = np.load(run / "evaluation-log-px.npy")
        assert values.shape == (ev["n_test"],) and values.mean() == pytest.approx(ev["log_px"], abs=1e-9)
        assert values.std(ddof=1) / np.sqrt(len(values)) == pytest.approx(ev["log_px_stderr"], rel=1e-6)
        runs.append(run)

    def table(*extra):
        res = subprocess.run([sys.executable, str(LIKELIHOOD), "--run", str(runs[0]), "--run",
                              str(runs[1]), "--threads", "1", *extra],
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        head, _, tail = res.stdout.partition("# paired")
        rows = {l.split()[0]: l.split() for l in head.splitlines() if l.startswith(("s0 ", "s1 "))}
        paired = [l.split() for l in tail.splitlines() if l.startswith("s1 ")]
        return rows, paired

    # from the saved estimates: the mean and standard error of the differences, by hand
    a, b = (np.load(r / "evaluation-log-px.npy") for r in runs)
    rows, paired = table("-k", "12", "--reuse")
    assert len(paired) == 1
    d = b - a
    assert float(paired[0][2]) == pytest.approx(d.mean(), abs=1e-3)
    assert float(paired[0][3]) == pytest.approx(d.std(ddof=1) / np.sqrt(len(d)), abs=1e-3)
    # evaluated afresh with another K: the mean difference is the difference of the two
    # runs' log p(x) in the table, and nothing in the runs is rewritten
    rows, paired = table("-k", "7")
    assert float(paired[0][2]) == pytest.approx(float(rows["s1"][3]) - float(rows["s0"][3]), abs=2e-3)
    assert np.array_equal(np.load(runs[0] / "evaluation-log-px.npy"), a)
    # with --save the fresh evaluation is kept beside the run's own (which stays), and --reuse
    # then pairs it unchanged
    own = [(r / "evaluation.json").read_bytes() for r in runs]
    rows7, paired7 = table("-k", "7", "--save")
    assert [(r / "evaluation.json").read_bytes() for r in runs] == own
    for run in runs:
        ev = json.loads((run / "evaluations" / "test-k7-seed1234.json").read_text())
        assert ev["importance_samples"] == 7
        assert np.load(run / "evaluations" / "test-k7-seed1234-log-px.npy").mean() == \
            pytest.approx(ev["log_px"], abs=1e-9)
    assert float(rows7["s1"][3]) == pytest.approx(float(rows["s1"][3]), abs=1e-3)
    rows, paired = table("-k", "7", "--reuse")
    assert set(rows) == {"s0", "s1"} and float(paired[0][2]) == pytest.approx(float(paired7[0][2]), abs=1e-3)
    # a run evaluated before the estimates were kept is listed, just not paired
    (runs[1] / "evaluations" / "test-k7-seed1234-log-px.npy").unlink()
    rows, paired = table("-k", "7", "--reuse")
    assert set(rows) == {"s0", "s1"} and paired == []
    # on the validation set: each run's row is what `vaekit evaluate --split valid` gives, the
    # pairing is image by image, the test evaluations kept in the runs are left alone, and the
    # published test numbers are not printed beside validation ones
    saved = [(r / "evaluation.json").read_text() for r in runs]
    res = subprocess.run([sys.executable, str(LIKELIHOOD), "--run", str(runs[0]), "--run",
                          str(runs[1]), "--threads", "1", "-k", "7", "--split", "valid"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("# validation log-likelihood") and "published" not in res.stdout
    head, _, tail = res.stdout.partition("# paired")
    valid = {l.split()[0]: l.split() for l in head.splitlines() if l.startswith(("s0 ", "s1 "))}
    paired = [l.split() for l in tail.splitlines() if l.startswith("s1 ")]
    for run in runs:
        cli = run_cli("evaluate", str(run), "--split", "valid", "-k", "7", "--json")
        assert cli.returncode == 0, cli.stderr
        ev = json.loads(cli.stdout)
        assert float(valid[run.name][3]) == pytest.approx(ev["log_px"], abs=1e-3)
        assert float(valid[run.name][3]) != pytest.approx(float(rows[run.name][3]), abs=1e-3)
    assert float(paired[0][2]) == pytest.approx(float(valid["s1"][3]) - float(valid["s0"][3]), abs=2e-3)
    assert [(r / "evaluation.json").read_text() for r in runs] == saved
    # --save keeps a validation evaluation under its own name (the run's test result stays),
    # and --reuse then takes it instead of evaluating again
    res = subprocess.run([sys.executable, str(LIKELIHOOD), "--run", str(runs[0]), "--split",
                          "valid", "-k", "7", "--save"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    kept = json.loads((runs[0] / "evaluations" / "valid-k7-seed1234.json").read_text())
    assert kept["split"] == "valid" and kept["log_px"] == pytest.approx(float(valid["s0"][3]), abs=1e-3)
    assert [(r / "evaluation.json").read_text() for r in runs] == saved
    (runs[0] / "evaluations" / "valid-k7-seed1234.json").write_text(json.dumps(dict(kept, log_px=-1.5)))
    res = subprocess.run([sys.executable, str(LIKELIHOOD), "--run", str(runs[0]), "--split",
                          "valid", "-k", "7", "--reuse"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "-1.500" in res.stdout  # read back, not evaluated again


def test_arch_cost_projects_from_the_variant_it_was_given(tmp_path):
    # each variant is the preset with its overrides applied: adding model.conv_refine = [3] to
    # a one-layer conv decoder on 8 x 8 digits changes the parameters and the decoder's FLOPs
    # by exactly what the layers it adds and replaces hold (counted here by hand), and the
    # projections are the timed parts times their counts
    import json

    script = LIKELIHOOD.parent / "arch_cost.py"
    base = 'conv-28 data.name="digits" model.conv_channels=[4] model.hidden=[8]'
    out = tmp_path / "rows.json"
    res = subprocess.run([sys.executable, str(script), "--variant", base, "--variant",
                          base + " model.conv_refine=[3]", "--threads", "1", "-k", "50",
                          "--repeats", "1", "--json", str(out)],
                         capture_output=True, text=True, timeout=300, cwd=LIKELIHOOD.parent)
    assert res.returncode == 0, res.stderr
    plain, refine = json.loads(out.read_text())
    assert res.stdout.count("conv-28 data.name") == 2
    # the decoder's last layer, a 4 -> 1 transposed conv (4 x 4 -> 8 x 8, kernel 4), becomes a
    # 4 -> 4 one, then a 3 x 3 conv 4 -> 3 and a 1 x 1 conv 3 -> 1 at 8 x 8
    params = (16 * 4 * 4 + 4) + (9 * 4 * 3 + 3) + (3 + 1) - (16 * 4 * 1 + 1)
    assert refine["params"] - plain["params"] == params
    macs = 16 * 16 * 4 * 4 + 64 * 9 * 4 * 3 + 64 * 3 - 16 * 16 * 4 * 1
    assert (refine["dec_mflop"] - plain["dec_mflop"]) * 1e6 == pytest.approx(2 * macs)
    for r in (plain, refine):
        assert (r["n_train"], r["n_valid"], r["n_test"], r["batch"], r["epochs"]) == (1437, 180, 180, 128, 30)
        assert r["epoch_s"] == pytest.approx(1437 / 128 * r["step_s"] + 180 / 128 * r["valid_s"])
        assert r["eval_s"] == pytest.approx(r["chunks"] * r["chunk_s"]) and r["chunk_s"] > 0


def test_the_current_results_table_is_made_from_the_rows_below_it():
    """RESULTS.md's top table matches what results_table.py makes from the log under it, and
    a number changed in the log changes the table (so it cannot drift from its rows)."""
    script = Path(__file__).parents[1] / "benchmarks" / "results_table.py"
    res = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    import importlib.util

    spec = importlib.util.spec_from_file_location("results_table", script)
    rt = importlib.util.module_from_spec(spec)
    sys.modules["results_table"] = rt  # dataclasses look their module up there
    spec.loader.exec_module(rt)
    _, table, log = rt.split_results(rt.RESULTS.read_text(encoding="utf-8"))
    row = rt.likelihood_rows(log)["fmnist-gconv16-a300"]
    assert row.nll == 225.78 and row.line in log
    moved = log.replace(row.line, row.line.replace("225.78", "224.91"))
    fresh = rt.make_table(moved)
    line = next(l for l in fresh.splitlines() if l.startswith("| `fmnist-best`"))
    assert "224.91 ± 0.76" in line and "**missed** by" not in line and "met by 0.09" in line
    # a validation table's rows are not test numbers
    assert "bmnist-hvae-iw4" in rt.likelihood_rows(log)
    assert rt.likelihood_rows(log)["bmnist-hvae-iw4"].nll == 82.96  # not its validation 83.61
