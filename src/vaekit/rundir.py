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
from .checkpoint import BEST, LATEST, kept_weights, load_model_state


CONFIG = "config.toml"
DATA = "data.json"
#: the run's own result: the test evaluation `train` made with the run's [eval] settings (or
#: one that `vaekit evaluate --update` made the run's result, its settings then in [eval])
EVALUATION = "evaluation.json"
#: each test example's log p(x) estimate (float64, in test-set order) beside evaluation.json
EVALUATION_LOG_PX = "evaluation-log-px.npy"
#: an unfinished evaluation's progress (per split), removed when it ends; see evaluate_run
EVALUATION_PROGRESS = "evaluation-{split}.partial.safetensors"
#: every other evaluation (`vaekit evaluate` without --update), one file per settings
EVALUATIONS = "evaluations"
SUMMARY = "summary.json"


def evaluation_name(split: str, importance_samples: int, seed: int, chunk_mib: int = 0) -> str:
    """The name an evaluation's files take from its settings, e.g. ``test-k1000-seed1234``
    (``-chunk64`` when a chunk size was given: it lays out the draws differently)."""
    return (f"{split}-k{importance_samples}-seed{seed}"
            + (f"-chunk{chunk_mib}" if chunk_mib else ""))


def eval_settings(cfg: Config, importance_samples: int | None = None, seed: int | None = None,
                  chunk_mib: int | None = None) -> tuple[int, int, int]:
    """(K, seed, chunk size) of an evaluation: each one given, else the run's ``[eval]``."""
    ev = cfg.eval
    return (ev.importance_samples if importance_samples is None else importance_samples,
            ev.seed if seed is None else seed, ev.chunk_mib if chunk_mib is None else chunk_mib)


def evaluation_files(run_dir: str | Path, name: str | None = None) -> tuple[Path, Path]:
    """(the JSON result, the per-example log p(x)) of the run's own evaluation (``name``
    None) or of the evaluation called ``name`` (:func:`evaluation_name`)."""
    run_dir = Path(run_dir)
    if name is None:
        return run_dir / EVALUATION, run_dir / EVALUATION_LOG_PX
    return run_dir / EVALUATIONS / f"{name}.json", run_dir / EVALUATIONS / f"{name}-log-px.npy"


def evaluation_progress(run_dir: str | Path, split: str = "test", name: str | None = None) -> Path:
    """Where an unfinished evaluation keeps its progress: the run's own (of ``split``), or the
    evaluation called ``name``."""
    if name is not None:
        return Path(run_dir) / EVALUATIONS / f"{name}.partial.safetensors"
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
    model = build_vae(cfg.model, tuple(spec.shape), spec.likelihood, num_classes=num_classes(spec),
                      data_spec=spec)
    load_model_state(model, kept_weights(tensors), path)
    return model.to(device).eval()


def num_classes(spec: DataSpec) -> int | None:
    """How many classes a dataset has (what a conditional model is built for)."""
    return len(spec.class_names) if spec.class_names else None


def evaluate_run(run_dir: str | Path, importance_samples: int | None = None, *,
                 data_dir: str | None = None, split: str = "test", chunk_mib: int | None = None,
                 seed: int | None = None, device: str = "cpu", save: bool = True,
                 update: bool = False, progress: bool = False, per_example: bool = False) -> dict:
    """Reload a run and evaluate it on exactly the test (or validation) set it was trained
    with. K, the seed and the chunk size default to the run's ``[eval]`` settings, the ones
    its own result (``evaluation.json``) was made with. ``per_example`` keeps each example's
    log p(x) in the result (see :func:`vaekit.evaluation.evaluate`).

    ``save`` writes the result to ``evaluations/NAME.json`` (and ``NAME-log-px.npy``), NAME
    given by the settings (:func:`evaluation_name`): an evaluation never replaces the run's
    own result, unless ``update`` asks for that (test split only); then the result becomes
    ``evaluation.json`` and the run's ``[eval]`` settings become the ones it used, so that
    the config and the result agree.

    The evaluation keeps its progress in the run after every batch of images: interrupted
    (Ctrl-C, a killed job), the same call continues where it stopped and gives the numbers
    an uninterrupted one would. The file goes when the evaluation ends."""
    if update and split != "test":
        raise ConfigError(f"--update makes an evaluation the run's own result, which is on the "
                          f"test set; drop --update to evaluate --split {split}")
    device = resolve_device(device)
    model = load_run(run_dir, device=device)
    cfg = read_config(run_dir)
    k, seed, chunk_mib = eval_settings(cfg, importance_samples, seed, chunk_mib)
    name = evaluation_name(split, k, seed, chunk_mib)
    data = dataset_for_spec(model.data_spec, data_dir)
    x, y = data.split(split)
    result = evaluate(model, x, k, chunk_mib=chunk_mib, seed=seed,
                      log_abs_det_jacobian=model.data_spec.log_abs_det_jacobian, device=device,
                      progress=progress, labels=y if model.conditional else None,
                      per_example=True,
                      resume_file=evaluation_progress(run_dir, split, name) if save else None)
    result.update(split=split, seed=seed, chunk_mib=chunk_mib)
    if save:
        save_evaluation(run_dir, result, name)
        result["saved_as"] = str(evaluation_files(run_dir, name)[0])
    if update:
        save_evaluation(run_dir, result)
        eval_now = {"importance_samples": k, "seed": seed, "chunk_mib": chunk_mib}
        if eval_now != {key: getattr(cfg.eval, key) for key in eval_now}:
            ckpt.atomic_write_text(Path(run_dir) / CONFIG, config_mod.to_toml(
                config_mod.merge(cfg, {"eval": eval_now}, "vaekit evaluate --update")))
        result["saved_as"] = str(evaluation_files(run_dir)[0])
    if not per_example:
        result.pop("log_px_per_example")
    return result


def save_evaluation(run_dir: str | Path, result: dict, name: str | None = None) -> None:
    """Write an evaluation: its per-example log p(x) (when the result has them) first, then
    its JSON (without them), each atomically; the run's own (``name`` None) or a named one."""
    values = {k: v for k, v in result.items() if k not in ("log_px_per_example", "saved_as")}
    path, log_px = evaluation_files(run_dir, name)
    if "log_px_per_example" in result:
        buf = io.BytesIO()
        np.save(buf, np.asarray(result["log_px_per_example"], dtype=np.float64))
        ckpt.atomic_write_bytes(log_px, buf.getvalue())
    ckpt.atomic_write_text(path, json.dumps(values, indent=1))


def read_evaluation(run_dir: str | Path, split: str = "test", importance_samples: int | None = None,
                    seed: int | None = None, chunk_mib: int | None = None) -> dict | None:
    """A saved evaluation of the run with these settings (each defaulting to the run's
    ``[eval]``): the run's own result where it was made with them, else the named one in
    ``evaluations/``; None when there is none."""
    cfg = read_config(run_dir)
    k, seed, chunk_mib = eval_settings(cfg, importance_samples, seed, chunk_mib)
    own = (k, seed, chunk_mib) == eval_settings(cfg)
    for name in ([None] if own and split == "test" else []) + [evaluation_name(split, k, seed, chunk_mib)]:
        path = evaluation_files(run_dir, name)[0]
        try:
            result = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError):
            continue
        if result.get("importance_samples") == k:
            result["saved_as"] = str(path)
            return result
    return None


def saved_log_px(run_dir: str | Path, evaluation: dict) -> np.ndarray | None:
    """The per-example log p(x) saved with ``evaluation`` (the run's evaluation.json, or a
    named one as :func:`read_evaluation` returns it), or None when there are none or they
    are not that evaluation's (another count or mean)."""
    saved = evaluation.get("saved_as")
    name = Path(saved).stem if saved and Path(saved).parent.name == EVALUATIONS else None
    try:
        values = np.load(evaluation_files(run_dir, name)[1], allow_pickle=False)
    except (OSError, ValueError):
        return None
    if (values.ndim != 1 or len(values) != evaluation.get("n_test")
            or not np.isclose(values.mean(), evaluation.get("log_px", np.nan), rtol=0, atol=1e-6)):
        return None
    return values
