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
