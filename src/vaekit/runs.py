"""Run directories: what ``train`` writes and every later command reads.

Layout of a run directory::

    config.toml                   the resolved configuration
    data.json                     the DataSpec: source, split, preprocessing, test checksum
    metrics.jsonl                 one line per epoch (train and validation numbers)
    checkpoints/latest.safetensors  full training state after the last epoch (or Ctrl-C)
    checkpoints/best.safetensors    full training state at the best validation epoch
    evaluation.json               the run's own test result (its [eval] settings; see rundir)
    evaluations/                  every other evaluation, one file per split, K and seed
    summary.json                  what ``train`` did: epochs, time, best epoch
    report.html, figures/, latent.json   the report (``vaekit report``; written by ``train``)

:func:`train_and_evaluate` is the whole of ``vaekit train`` as one function that tests call
with a tiny config; :func:`load_run` gives back the trained model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import time
from pathlib import Path

import torch

from . import checkpoint as ckpt
from . import config as config_mod
from . import distributed
from . import fused
from .config import Config
from .data import DataSpec, Dataset, dataset_for_spec, load_dataset
from .errors import CheckpointError, ConfigError, DataError, VaekitError, WriteError
from .evaluation import evaluate
from .model import VAE, build_vae
from .rundir import (CONFIG, DATA, SUMMARY, check_run_dir, num_classes,
                     evaluation_progress, read_config, read_data_spec,
                     save_evaluation)
from .checkpoint import BEST, LATEST, METRICS, kept_weights, load_model_state
from .train import Trainer, resolve_device

log = logging.getLogger(__name__)

def default_run_dir(cfg: Config) -> Path:
    name = Path(cfg.data.name).stem if cfg.data.name else "run"
    return Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{name}"


def check_new_run_dir(path: str | Path) -> Path:
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise VaekitError(f"run directory {str(path)!r} already exists and is not empty; "
                          f"choose another --out, or continue it with --resume {path}")
    return path


LOCK = ".lock"


@contextlib.contextmanager
def writer_lock(run_dir: Path):
    """Hold the run directory's writer lock: one ``train`` per run directory at a time.

    An exclusive ``flock`` on ``RUN/.lock``: the kernel releases it when the holder exits,
    however it exits (SIGKILL included), so a crashed run never leaves it stuck. The file
    names the holder's PID for the message. Where flock does not exist (Windows) no lock is
    taken."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path = Path(run_dir) / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            raise VaekitError(f"run directory {str(run_dir)!r} is being trained by process "
                              f"{holder}; wait for it to finish or stop it (Ctrl-C saves its "
                              "state), then try again") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def check_fits(model: VAE, data: Dataset, cfg: Config) -> None:
    """Refuse data that the likelihood or the latent size cannot model."""
    for split in ("train", "valid", "test"):
        if len(getattr(data, split)) == 0:  # the validation split of a data.refit run
            continue
        try:
            model.likelihood.check_data(getattr(data, split), f"the {split} split of {data.spec.name!r}")
        except ValueError as e:
            raise DataError(str(e)) from None
    dim = 1
    for s in data.shape:
        dim *= s
    if sum(config_mod.latent_levels(cfg.model.latent_dim)) > dim:
        raise ConfigError(f"model.latent_dim = {cfg.model.latent_dim} exceeds the data dimension "
                          f"{dim} of {data.spec.name!r}; choose --latent-dim {max(1, min(dim, 2))} "
                          f"to {dim}")


def prepare(cfg: Config) -> tuple[Dataset, VAE]:
    """Load the data and build the model for ``cfg``, checking that they fit."""
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    data = load_dataset(cfg.data, cfg.model.likelihood)
    torch.manual_seed(cfg.train.seed)
    model = build_vae_checked(cfg, data)
    check_fits(model, data, cfg)
    return data, model


def build_vae_checked(cfg: Config, data: Dataset) -> VAE:
    if cfg.model.conditional and (data.train_labels is None or data.train_labels.is_floating_point()
                                  or not data.spec.class_names):
        raise ConfigError(f"model.conditional = true needs data with class labels, and "
                          f"{data.spec.name!r} has none; train an unconditional model "
                          "(model.conditional = false) or give labelled data")
    try:
        model = build_vae(cfg.model, data.shape, data.spec.likelihood, init_data=data.train,
                          num_classes=num_classes(data.spec), data_spec=data.spec)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    fused.require(model, cfg, distributed=distributed.from_env().distributed)  # before any write
    return model


def resume_config(run_dir: str | Path, overrides: list[dict], branch: bool = False) -> Config:
    """The run's own config with overrides applied. A resume in place may change only how
    the run trains from here (:data:`config.RESUME_SAFE_KEYS`); a branch (``branch``: the
    copy that ``--resume RUN --out NEW`` makes) a few more (:data:`config.BRANCH_SAFE_KEYS`).
    Anything else, the keys that shape the weights above all, is refused in one line."""
    saved = read_config(run_dir)
    cfg = saved
    for update in overrides:
        if "origin" in update:
            raise ConfigError("[origin] is written by vaekit when a run is branched; it cannot "
                              "be set")
        cfg = config_mod.merge(cfg, update, "command-line options")
    config_mod.resume_changes(saved, cfg, branch)
    return cfg.validate()


def fork_run(source: str | Path, dest: str | Path, start: str = "latest",
             cfg: Config | None = None) -> tuple[Path, Config]:
    """Make ``dest`` a new run that continues ``source`` from its ``start`` checkpoint
    ("latest" or "best"), ready for ``train --resume``: its data spec, metrics (the resume
    drops the epochs after the checkpoint), checkpoints and config: ``cfg`` (the source's
    own when None; checked by :func:`resume_config` with ``branch=True``) with an
    ``[origin]`` section naming the source, the checkpoint, its epoch and every setting the
    branch changed. Returns the new run and that config. ``source`` is only read.
    The copy is made in a hidden sibling folder and renamed into place, so a failure leaves
    no half-made run. Forking from "best" is how a run is annealed (or otherwise continued)
    from its best epoch without losing the epochs after it."""
    source = check_run_dir(source)
    path = source / (BEST if start == "best" else LATEST)
    if not path.is_file():
        raise CheckpointError(f"{str(source)!r} has no {start} checkpoint ({path.name} is "
                              "missing) to continue from")
    _, meta = ckpt.load(path)  # a corrupt checkpoint stops here, before any write
    if meta.get("kind") != "training":
        raise CheckpointError(f"{path} holds no training state to continue from")
    saved = read_config(source)
    cfg = cfg or saved
    changed = config_mod.resume_changes(saved, cfg, branch=True)
    at = meta["state"]
    if cfg.train.batch_size != saved.train.batch_size and at.get("batch", 0):
        raise ConfigError(f"{path.name} stopped inside epoch {at['epoch'] + 1} (after batch "
                          f"{at['batch']} of {saved.train.batch_size} examples); a branch can "
                          "change train.batch_size only from the end of an epoch: branch --from "
                          "best, or resume the run to its epoch's end first")
    cfg = dataclasses.replace(cfg, origin=config_mod.OriginConfig(
        run=str(source), checkpoint=start, epoch=meta["state"]["epoch"], changed=changed))
    dest = check_new_run_dir(dest)
    tmp = dest.parent / f".{dest.name}.fork-{os.getpid()}"
    try:
        (tmp / LATEST).parent.mkdir(parents=True)
        ckpt.atomic_write_text(tmp / CONFIG, config_mod.to_toml(cfg))
        for name in (DATA, METRICS):
            if (source / name).is_file():
                ckpt.atomic_write_bytes(tmp / name, (source / name).read_bytes())
        ckpt.atomic_write_bytes(tmp / LATEST, path.read_bytes())
        best = source / BEST
        ckpt.atomic_write_bytes(tmp / BEST, (best if best.is_file() else path).read_bytes())
        if dest.is_dir():
            dest.rmdir()  # empty (check_new_run_dir)
        os.replace(tmp, dest)
    except OSError as e:
        raise ckpt.write_error(dest, e) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("forked %s at epoch %d (%s checkpoint) into %s%s", source, meta["state"]["epoch"],
             start, dest, f", changing {'; '.join(changed)}" if changed else "")
    return dest, cfg


def check_device(cfg: Config) -> torch.device:
    """The device exists and takes the chosen precision (fp16 autocast needs a GPU)."""
    device = resolve_device(cfg.train.device)
    if cfg.train.precision == "fp16" and device.type == "cpu":
        raise ConfigError("fp16 autocast needs a GPU; use --set train.precision=\"bf16\" on a CPU")
    distributed.check_gpus(device, distributed.from_env(), cfg.train.backend)
    return device


def train_and_evaluate(cfg: Config, run_dir: str | Path | None = None, *, resume: bool = False,
                       evaluate_samples: int | None = None, callbacks=None) -> dict:
    """Train (or resume) a run and evaluate its best model on the test set.

    Returns the summary dict (also written to ``summary.json``), with the evaluation under
    ``"evaluation"``. Nothing is written before the data and model have been checked, and
    the run directory's writer lock is held from the first write to the last."""
    world = distributed.from_env()
    if evaluate_samples:  # the K the run's result uses is recorded in its config
        cfg = config_mod.merge(cfg, {"eval": {"importance_samples": evaluate_samples}},
                               "evaluate_samples").validate()
    check_device(cfg)  # before anything is written
    if cfg.train.tensorboard:
        from .tracking import require_tensorboard

        require_tensorboard()
    with contextlib.ExitStack() as stack:
        if resume:
            run_dir = check_run_dir(run_dir)
            if not (Path(run_dir) / LATEST).is_file() and not (Path(run_dir) / RESTARTS).is_dir():
                raise CheckpointError(f"{run_dir} has no checkpoint to resume from "
                                      f"({LATEST} is missing); start a new run instead")
            if world.main:
                stack.enter_context(writer_lock(run_dir))
            saved = read_config(run_dir)
            config_mod.resume_changes(saved, cfg, branch=False)  # the CLI checked; the API too
            if cfg.origin == config_mod.OriginConfig():
                cfg = dataclasses.replace(cfg, origin=saved.origin)  # a branch stays one
            if cfg.train.threads:
                torch.set_num_threads(cfg.train.threads)
            spec = read_data_spec(run_dir)
            data = dataset_for_spec(spec, cfg.data.data_dir or None)
            torch.manual_seed(cfg.train.seed)
            model = build_vae_checked(cfg, data)
            if world.main:  # the config may have new non-shape values (more epochs, another lr)
                ckpt.atomic_write_text(Path(run_dir) / CONFIG, config_mod.to_toml(cfg))
        else:
            if run_dir is None and world.distributed:
                raise ConfigError("give --out RUN_DIR when training with several processes")
            run_dir = Path(run_dir or default_run_dir(cfg))
            if world.main:  # only rank 0 looks at and writes the run directory
                check_new_run_dir(run_dir)
            data, model = prepare(cfg)
            if world.main:
                try:
                    run_dir.mkdir(parents=True, exist_ok=True)
                except OSError as e:
                    raise ckpt.write_error(run_dir, e) from None
                stack.enter_context(writer_lock(run_dir))
                if (run_dir / CONFIG).exists():  # another train created it meanwhile
                    raise VaekitError(f"run directory {str(run_dir)!r} was created by another "
                                      "`vaekit train` just now; choose another --out")
                ckpt.atomic_write_text(run_dir / CONFIG, config_mod.to_toml(cfg))
                ckpt.atomic_write_text(run_dir / DATA, json.dumps(data.spec.to_dict(), indent=1))
        try:
            return _train(cfg, Path(run_dir), data, model, resume, callbacks, world)
        except WriteError as e:  # a full disk: what was written before is intact
            raise WriteError(f"{getattr(e, 'base', e)}; the run keeps its last complete "
                             f"checkpoint: make room, then continue it with `vaekit train "
                             f"--resume {run_dir}`") from None


def _train(cfg, run_dir: Path, data, model, resume, callbacks, world) -> dict:
    user_callbacks = callbacks  # restarts get these too (not TensorBoard's: one curve per run)
    writer = None
    if cfg.train.tensorboard and world.main:
        from .tracking import tensorboard_callbacks

        tb, writer = tensorboard_callbacks(run_dir, model, cfg.train.seed)
        mine = list(callbacks) if isinstance(callbacks, (list, tuple)) else [callbacks or {}]
        callbacks = [*mine, tb]
    trainer = None
    restarts = None
    try:
        if cfg.train.restarts > 1 and not (run_dir / LATEST).is_file():
            restarts = _run_restarts(cfg, run_dir, data, world, user_callbacks)
            if restarts is None:  # interrupted: `train --resume` continues the restart it was in
                return {"run_dir": str(run_dir), "rank": world.rank, "interrupted": True,
                        "epochs": 0, "steps": 0, "best_epoch": 0, "train_seconds": 0.0}
            resume = True  # train on from the kept restart's state
        elif cfg.train.restarts > 1:
            restarts = _restart_results(run_dir)
        trainer = Trainer(model, data, cfg, run_dir, callbacks=callbacks)
        summary = trainer.fit(resume=resume)
        if restarts is not None:
            summary["restarts"] = restarts
            summary["kept_restart"] = kept = max(restarts, key=_restart_score)["restart"]
            # the kept restart's time is in its checkpoint already; add the others'
            summary["train_seconds"] = round(summary["train_seconds"] + sum(
                r["train_seconds"] for r in restarts if r["restart"] != kept), 3)
    finally:
        if writer is not None:
            writer.close()
        if world.distributed:
            if trainer is not None:
                trainer.close()
            distributed.teardown()  # the processes part here; rank 0 evaluates alone
    summary["run_dir"] = str(run_dir)
    summary["rank"] = world.rank
    if summary["interrupted"] or not world.main:
        return summary
    tensors, _ = ckpt.load(run_dir / BEST)
    load_model_state(model, kept_weights(tensors), run_dir / BEST)
    result = evaluate(model, data.test, cfg.eval.importance_samples, chunk_mib=cfg.eval.chunk_mib, seed=cfg.eval.seed,
                      log_abs_det_jacobian=data.spec.log_abs_det_jacobian, device=trainer.device,
                      progress=cfg.train.progress,
                      labels=data.test_labels if model.conditional else None, per_example=True,
                      resume_file=evaluation_progress(run_dir))
    result.update(split="test", seed=cfg.eval.seed, chunk_mib=cfg.eval.chunk_mib)
    save_evaluation(run_dir, result)
    result.pop("log_px_per_example")
    summary["evaluation"] = result
    ckpt.atomic_write_text(run_dir / SUMMARY, json.dumps(summary, indent=1))
    if cfg.report.enabled:
        from .report import build_report

        summary["report"] = str(build_report(run_dir, data_dir=cfg.data.data_dir or None,
                                             seed=cfg.train.seed, tsne=cfg.report.tsne,
                                             explorer_grid=cfg.report.explorer_grid))
    return summary


RESTARTS = "restarts"
RESTART_DONE = "restart.json"


def restart_seed(seed: int, restart: int) -> int:
    """The seed of restart r: restart 0 is the run ``seed`` gives alone; the others are far
    apart, so the restarts of runs with neighbouring seeds do not coincide."""
    return seed + 1_000_003 * restart


def _restart_score(result: dict) -> float:
    return result["best_valid_objective"]


def _restart_results(run_dir: Path) -> list[dict]:
    results = []
    for sub in sorted((run_dir / RESTARTS).glob(f"*/{RESTART_DONE}"),
                      key=lambda p: int(p.parent.name)):
        results.append(json.loads(sub.read_text(encoding="utf-8")))
    return results


def _run_restarts(cfg: Config, run_dir: Path, data, world, callbacks=None) -> list[dict] | None:
    """The first phase of a run with ``train.restarts`` = N > 1: N fresh initialisations
    (seeds :func:`restart_seed`), each trained for ``train.restart_epochs`` epochs in
    ``RUN/restarts/R/`` (a run directory of its own, resumable like any), all validated with
    the same eps; ``train.restart_jobs`` of them at a time, in worker processes when more
    than one (each restart is the same whatever ran beside it). The one with the best
    validation objective becomes the run: its checkpoints and metrics are copied to ``RUN/``
    and training continues from its state to ``train.epochs``. Returns every restart's
    result, or None when interrupted."""
    if world.distributed:
        raise ConfigError("train.restarts > 1 runs one process; start it without torchrun")
    t = cfg.train
    todo = [r for r in range(t.restarts) if not (run_dir / RESTARTS / str(r) / RESTART_DONE).is_file()]
    if t.restart_jobs > 1 and len(todo) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        log.info("training %d restarts, %d at a time in worker processes", len(todo), t.restart_jobs)
        jobs = min(t.restart_jobs, len(todo))
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            done = list(pool.map(_restart_worker, [(cfg.to_dict(), str(run_dir), r, data.spec.to_dict())
                                                   for r in todo]))
        if any(result is None for result in done):
            return None
    else:
        for r in todo:
            if _train_restart(cfg, run_dir, r, data, callbacks) is None:
                return None
    results = [json.loads((run_dir / RESTARTS / str(r) / RESTART_DONE).read_text(encoding="utf-8"))
               for r in range(t.restarts)]
    kept = max(results, key=_restart_score)
    log.info("kept restart %d of %d (validation objective %.4f); training it on to epoch %d",
             kept["restart"] + 1, t.restarts, kept["best_valid_objective"], t.epochs)
    sub = run_dir / RESTARTS / str(kept["restart"])

    ckpt.atomic_write_bytes(run_dir / METRICS, (sub / METRICS).read_bytes())
    ckpt.atomic_write_bytes(run_dir / BEST, (sub / BEST).read_bytes())
    ckpt.atomic_write_bytes(run_dir / LATEST, (sub / LATEST).read_bytes())  # last: phase done
    return results


def _train_restart(cfg: Config, run_dir: Path, r: int, data, callbacks=None) -> dict | None:
    """Train (or resume) restart r in RUN/restarts/r; its result, or None if interrupted."""
    import copy

    t = cfg.train
    sub = run_dir / RESTARTS / str(r)
    rcfg = copy.deepcopy(cfg)
    rcfg.train.seed = restart_seed(t.seed, r)
    rcfg.train.epochs = min(t.restart_epochs or t.epochs, t.epochs)
    rcfg.train.restarts, rcfg.train.restart_epochs, rcfg.train.restart_jobs = 1, 0, 1
    resume = (sub / LATEST).is_file()
    if not resume:
        sub.mkdir(parents=True, exist_ok=True)
        ckpt.atomic_write_text(sub / CONFIG, config_mod.to_toml(rcfg))
    torch.manual_seed(rcfg.train.seed)
    model = build_vae_checked(rcfg, data)
    log.info("restart %d of %d (seed %d): %d epochs", r + 1, t.restarts, rcfg.train.seed,
             rcfg.train.epochs)
    summary = Trainer(model, data, rcfg, sub, callbacks=callbacks,
                      valid_seed=t.seed + 3).fit(resume=resume)
    if summary["interrupted"]:
        return None
    result = {"restart": r, "seed": rcfg.train.seed, "epochs": summary["epochs"],
              "best_epoch": summary["best_epoch"],
              "best_valid_objective": summary["best_valid_objective"],
              "train_seconds": summary["train_seconds"]}
    log.info("restart %d: best validation objective %.4f (epoch %d)", r + 1,
             result["best_valid_objective"], result["best_epoch"])
    ckpt.atomic_write_text(sub / RESTART_DONE, json.dumps(result, indent=1))
    return result


def _restart_worker(args) -> dict | None:
    """One restart in a worker process: the run's data (checked against its spec, so it is
    exactly the parent's) and the restart's own thread count."""
    cfg_dict, run_dir, r, spec = args
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = config_mod.from_dict(cfg_dict)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    data = dataset_for_spec(DataSpec.from_dict(spec), cfg.data.data_dir or None)
    try:
        return _train_restart(cfg, Path(run_dir), r, data)
    except KeyboardInterrupt:
        return None


