"""Shared fixtures: tiny configurations, and the benchmark data directory.

The data directory comes from $VAEKIT_DATA_DIR (set by .ci/run); tests that need the
benchmark files are skipped with a reason when it is not set."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vaekit import config as config_mod

ROOT = Path(__file__).resolve().parent.parent

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest-xdist runs one worker per core: one thread each keeps them from fighting.
    torch.set_num_threads(1)


@pytest.fixture
def data_dir() -> Path:
    value = os.environ.get("VAEKIT_DATA_DIR")
    if not value or not Path(value).is_dir():
        pytest.skip("VAEKIT_DATA_DIR is not set to the benchmark data folder")
    return Path(value).resolve()  # the README's command gives it relative; tests run elsewhere


def tiny_config(**sections) -> config_mod.Config:
    """A config that trains in about a second on scikit-learn's 8x8 digits."""
    base = {
        "data": {"name": "digits"},
        "model": {"latent_dim": 4, "hidden": [32]},
        "train": {"epochs": 2, "batch_size": 64, "progress": False, "threads": 1},
        "eval": {"importance_samples": 8},
    }
    for section, values in sections.items():
        base.setdefault(section, {}).update(values)
    return config_mod.merge(config_mod.Config(), base).validate()


def run_cli(*args: str, cwd=None, env=None, timeout=300) -> subprocess.CompletedProcess:
    """Run the real `vaekit` command in a subprocess."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "vaekit", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Downloads go to a fresh folder, never the user's cache (the CLI subprocesses inherit
    the variable); nothing in the suite reaches beyond 127.0.0.1."""
    old = os.environ.get("VAEKIT_CACHE_DIR")
    os.environ["VAEKIT_CACHE_DIR"] = str(tmp_path_factory.mktemp("vaekit-cache"))
    yield
    if old is None:
        os.environ.pop("VAEKIT_CACHE_DIR", None)
    else:
        os.environ["VAEKIT_CACHE_DIR"] = old


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


def assert_one_error(res: subprocess.CompletedProcess, *words: str) -> str:
    """Exit status 2, exactly one `error:` line containing ``words``, no traceback."""
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    lines = [l for l in res.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]
