"""Reading a run directory: its files, its config and data spec, its trained model, and its
evaluation. What every command after `train` uses (``report``, ``evaluate``, ``sample``, ...);
``runs.py`` writes run directories and imports this, never the other way round.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch

from . import checkpoint as ckpt
from . import config as config_mod
from .config import Config
from .data import DataSpec, dataset_for_spec
from .devices import resolve_device
from .errors import CheckpointError, ConfigError
from .evaluation import evaluate
from .model import VAE, build_vae
from .train import BEST, LATEST, kept_weights, load_model_state


CONFIG = "config.toml"
DATA = "data.json"
EVALUATION = "evaluation.json"
#: each test example's log p(x) estimate (float64, in test-set order) beside evaluation.json
EVALUATION_LOG_PX = "evaluation-log-px.npy"
#: an unfinished evaluation's progress (per split), removed when it ends; see evaluate_run
EVALUATION_PROGRESS = "evaluation-{split}.partial.safetensors"
SUMMARY = "summary.json"


def evaluation_progress(run_dir: str | Path, split: str = "test") -> Path:
    """Where an unfinished evaluation of ``split`` keeps its progress in a run."""
    return Path(run_dir) / EVALUATION_PROGRESS.format(split=split)


def check_run_dir(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"run directory {str(path)!r} does not exist; give the --out "
                              "directory of a `vaekit train` run")
    if not path.is_dir():
        raise CheckpointError(f"{str(path)!r} is a file, not a run directory")
    for name in (CONFIG, DATA):
        if not (path / name).is_file():
            raise CheckpointError(f"{str(path)!r} is not a complete vaekit run: {name} is "
                                  "missing (was it written by `vaekit train`?)")
    return path


def read_config(run_dir: str | Path) -> Config:
    run_dir = Path(run_dir)
    try:
        return config_mod.merge(Config(), config_mod.load_toml(run_dir / CONFIG),
                                str(run_dir / CONFIG)).validate()
    except ConfigError as e:
        raise CheckpointError(f"{run_dir / CONFIG} is damaged: {e}") from None


def read_data_spec(run_dir: str | Path) -> DataSpec:
    path = Path(run_dir) / DATA
    try:
        return DataSpec.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is damaged ({type(e).__name__}); the run cannot be "
                              "used without it") from None


def load_run(run_dir: str | Path, which: str = "best", device: str | torch.device = "cpu") -> VAE:
    """The trained VAE of a run directory, in eval mode, with its ``data_spec``,
    on ``device`` (a name as ``--device`` takes it, ``auto`` included)."""
    device = resolve_device(device)
    run_dir = check_run_dir(run_dir)
    cfg = read_config(run_dir)
    spec = read_data_spec(run_dir)
    path = run_dir / (BEST if which == "best" else LATEST)
    tensors, meta = ckpt.load(path)
    model = build_vae(cfg.model, tuple(spec.shape), spec.likelihood, num_classes=num_classes(spec))
    load_model_state(model, kept_weights(tensors), path)
    model.data_spec = spec
    return model.to(device).eval()


def num_classes(spec: DataSpec) -> int | None:
    """How many classes a dataset has (what a conditional model is built for)."""
    return len(spec.class_names) if spec.class_names else None


def evaluate_run(run_dir: str | Path, importance_samples: int = 1000, *, data_dir: str | None = None,
                 split: str = "test", chunk_mib: int = 0, seed: int = 1234,
                 device: str = "cpu", save: bool = True, progress: bool = False,
                 per_example: bool = False) -> dict:
    """Reload a run and evaluate it on exactly the test (or validation) set it was trained
    with. ``per_example`` keeps each example's log p(x) in the result (see
    :func:`vaekit.evaluation.evaluate`); a saved test evaluation always writes them.

    The evaluation keeps its progress in the run (``evaluation-SPLIT.partial.safetensors``)
    after every batch of images: interrupted (Ctrl-C, a killed job), the same call continues
    where it stopped and gives the numbers an uninterrupted one would. The file goes when
    the evaluation ends."""
    device = resolve_device(device)
    model = load_run(run_dir, device=device)
    data = dataset_for_spec(model.data_spec, data_dir)
    x, y = data.split(split)
    result = evaluate(model, x, importance_samples, chunk_mib=chunk_mib, seed=seed,
                      log_abs_det_jacobian=model.data_spec.log_abs_det_jacobian, device=device,
                      progress=progress, labels=y if model.conditional else None,
                      per_example=True,
                      resume_file=evaluation_progress(run_dir, split))
    result["split"] = split
    if save and split == "test":
        save_evaluation(run_dir, result)
    if not per_example:
        result.pop("log_px_per_example")
    return result


def save_evaluation(run_dir: str | Path, result: dict) -> None:
    """Write a test evaluation: its per-example log p(x) (when the result has them) first,
    then ``evaluation.json`` (without them), each atomically."""
    run_dir = Path(run_dir)
    values = {k: v for k, v in result.items() if k != "log_px_per_example"}
    if "log_px_per_example" in result:
        buf = io.BytesIO()
        np.save(buf, np.asarray(result["log_px_per_example"], dtype=np.float64))
        ckpt.atomic_write_bytes(run_dir / EVALUATION_LOG_PX, buf.getvalue())
    ckpt.atomic_write_text(run_dir / EVALUATION, json.dumps(values, indent=1))


def saved_log_px(run_dir: str | Path, evaluation: dict) -> np.ndarray | None:
    """The per-example log p(x) saved with ``evaluation`` (a run's evaluation.json), or None
    when there are none or they are not that evaluation's (another count or mean)."""
    try:
        values = np.load(Path(run_dir) / EVALUATION_LOG_PX, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if (values.ndim != 1 or len(values) != evaluation.get("n_test")
            or not np.isclose(values.mean(), evaluation.get("log_px", np.nan), rtol=0, atol=1e-6)):
        return None
    return values
