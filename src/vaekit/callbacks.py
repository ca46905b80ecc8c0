"""The parts the training loop plugs in, the way a user's callback plugs in.

:class:`vaekit.train.Trainer` runs epochs of steps; everything else it does is a
:class:`Callback` with the same hooks a user's has (as Keras's and Lightning's callbacks,
minGPT's trainer):

- :class:`Checkpoints`: the run's ``latest`` and ``best`` checkpoints (or, without a run
  directory, the best weights in memory), and what a resume restores from them (before the
  parts start): weights, optimiser, schedule (a changed one replayed), loss scale,
  generators and the loop's position;
- :class:`MetricsLog`: ``metrics.jsonl``, one line per epoch (trimmed to the checkpoint on
  resume);
- :class:`EpochLog`: the line per epoch on the console;
- :class:`EarlyStopping`: stop after ``train.patience`` epochs without a better validation
  objective;
- :class:`Interrupts`: Ctrl-C or SIGTERM asks the loop to stop at the next batch boundary,
  where the exact position is saved.

The hooks, called in the order the parts are listed (the trainer's own first: the metrics
line is written before the checkpoint that includes its epoch; the user's after them, early
stopping last): ``on_fit_start(trainer, resume)``, ``on_batch_end(trainer)``,
``on_epoch_end(trainer, row)`` with the epoch's metrics row (set ``trainer.should_stop`` to
end training after it), ``on_fit_end(trainer)`` (always, also after an error).
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch

from . import checkpoint as ckpt
from .checkpoint import BEST, LATEST, METRICS, load_model_state
from .config import TrainConfig
from .errors import CheckpointError
from .optim import make_scheduler

log = logging.getLogger("vaekit.train")

# what decides the learning rate of each epoch; a change on resume replays the schedule
SCHEDULE_KEYS = ("lr", "lr_schedule", "lr_gamma", "lr_decay_start", "epochs")


class Callback:
    """A part of training: override the hooks it needs (see the module)."""

    def on_fit_start(self, trainer, resume: bool) -> None:
        pass

    def on_batch_end(self, trainer) -> None:
        pass

    def on_epoch_end(self, trainer, row: dict) -> None:
        pass

    def on_fit_end(self, trainer) -> None:
        pass


class FunctionCallbacks(Callback):
    """Plain functions as callbacks: ``{"on_batch_end": [fn(trainer)], "on_epoch_end":
    [fn(trainer, row)]}``, the minGPT-style form a user's code and TensorBoard's use."""

    EVENTS = ("on_batch_end", "on_epoch_end")

    def __init__(self, functions: dict[str, list[Callable]]):
        for event in functions:
            if event not in self.EVENTS:
                raise ValueError(f"unknown callback event {event!r}; use {list(self.EVENTS)}")
        self.functions = {event: list(functions.get(event, [])) for event in self.EVENTS}

    def on_batch_end(self, trainer) -> None:
        for fn in self.functions["on_batch_end"]:
            fn(trainer)

    def on_epoch_end(self, trainer, row: dict) -> None:
        for fn in self.functions["on_epoch_end"]:
            fn(trainer, row)


def versions() -> dict[str, str]:
    from . import __version__

    return {"vaekit": __version__, "torch": torch.__version__}


class Checkpoints(Callback):
    """``latest`` after every epoch (and at a stop request, mid-epoch), ``best`` at every
    better epoch; on resume, the state of ``latest`` (or the checkpoint given)."""

    def __init__(self, run_dir: Path | None):
        self.run_dir = run_dir
        #: the kept model's best weights, in memory, when there is no run directory
        self.best_weights: dict[str, torch.Tensor] | None = None

    def on_epoch_end(self, trainer, row: dict) -> None:
        self.save(trainer, best=trainer.state.best_epoch == trainer.state.epoch)

    def state_bytes(self, trainer) -> bytes:
        tensors: dict[str, torch.Tensor] = {}
        for k, v in trainer.model.state_dict().items():
            tensors[f"model.{k}"] = v.detach().cpu().contiguous()
        if trainer.ema is not None:
            for k, v in trainer.ema.state_dict().items():
                tensors[f"ema.{k}"] = v.detach().cpu().contiguous()
        optim = ckpt.split_state(trainer.optimizer.state_dict(), "optim", tensors)
        sched = (ckpt.split_state(trainer.scheduler.state_dict(), "sched", tensors)
                 if trainer.scheduler else None)
        tensors.update(ckpt.rng_state())
        tensors["rng.data_epoch"] = trainer.epoch_generator_state
        tensors["rng.data"] = trainer.generator.get_state()
        tensors["rng.noise"] = trainer.noise.get_state()
        meta = {
            "kind": "training",
            "state": asdict(trainer.state),
            "optimizer": optim,
            "scheduler": sched,
            "config": trainer.cfg.to_dict(),
            # fp16: the loss scale and its growth counter, so a resumed run scales as the
            # uninterrupted one would
            "scaler": trainer.scaler.state_dict() if trainer.scaler is not None else None,
            "versions": versions(),
            "world_size": trainer.world.size,
        }
        return ckpt.to_bytes(tensors, meta)

    def save(self, trainer, best: bool = False) -> None:
        if self.run_dir is None:
            if best:
                self.best_weights = {k: v.detach().clone()
                                     for k, v in trainer.kept_model.state_dict().items()}
            return
        if not trainer.world.main:
            return
        blob = self.state_bytes(trainer)
        ckpt.atomic_write_bytes(self.run_dir / LATEST, blob)
        if best:
            ckpt.atomic_write_bytes(self.run_dir / BEST, blob)

    def restore(self, trainer, path: str | Path | None = None) -> None:
        """Put the training state of ``path`` (default: the run's latest checkpoint) into
        ``trainer``: what ``fit(resume=True)`` does before any part's ``on_fit_start``."""
        if trainer.world.main:
            _remove_stale_temporaries(self.run_dir)
        path = path or self.run_dir / LATEST
        tensors, meta = ckpt.load(path)
        if meta.get("kind") != "training":
            raise CheckpointError(f"{path} holds no training state")
        model_state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
        load_model_state(trainer.model, model_state, self.run_dir)
        ema_state = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}
        if trainer.ema is not None and ema_state:  # else an average begun now, at the next step
            load_model_state(trainer.ema, ema_state, self.run_dir)
        cfg = trainer.cfg.train
        saved_train = meta.get("config", {}).get("train", {})
        defaults = TrainConfig()
        changed = [k for k in SCHEDULE_KEYS
                   if saved_train.get(k, getattr(defaults, k)) != getattr(cfg, k)]
        if saved_train.get("lr_schedule", "none") == cfg.lr_schedule == "none":
            changed = [k for k in changed if k == "lr"]  # a constant rate: nothing else counts
        decay_was = saved_train.get("weight_decay", 0.0)
        if (decay_was > 0) != (cfg.weight_decay > 0):
            raise CheckpointError(
                f"this run trained with train.weight_decay = {decay_was}; it can change on "
                f"resume but not be switched on or off (the optimiser's state differs)")
        try:
            trainer.optimizer.load_state_dict(ckpt.join_state(meta["optimizer"], tensors))
            for group in trainer.optimizer.param_groups:  # a decay changed on resume applies
                if group["weight_decay"]:
                    group["weight_decay"] = cfg.weight_decay
            if trainer.scheduler and meta.get("scheduler") is not None and not changed:
                trainer.scheduler.load_state_dict(ckpt.join_state(meta["scheduler"], tensors))
        except (KeyError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"the optimiser state in the checkpoint does not fit this "
                                  f"model ({e}); resume with the run's own config") from None
        if trainer.scaler is not None and meta.get("scaler"):
            trainer.scaler.load_state_dict(meta["scaler"])
        trainer.state = type(trainer.state)(**meta["state"])
        trainer.choose_engine(trainer.state.engine)
        if changed:  # e.g. --lr or a schedule given on resume
            self._replay_schedule(trainer, changed, trainer.state.epoch)
        ckpt.set_rng_state(tensors)
        trainer.epoch_generator_state = tensors["rng.data_epoch"]
        trainer.generator.set_state(tensors["rng.data"])
        if "rng.noise" in tensors:
            trainer.noise.set_state(tensors["rng.noise"])

    @staticmethod
    def _replay_schedule(trainer, changed: list[str], epochs_done: int) -> None:
        """Set the learning rate a run configured like this from the start would have after
        ``epochs_done`` epochs: a schedule changed on resume continues from there."""
        log.info("learning-rate settings changed on resume (%s): the rate is the one this "
                 "config gives after %d epochs", ", ".join(changed), epochs_done)
        for group in trainer.optimizer.param_groups:
            group["lr"] = group["initial_lr"] = trainer.cfg.train.lr
        trainer.scheduler = make_scheduler(trainer.optimizer, trainer.cfg)
        if trainer.scheduler:
            with warnings.catch_warnings():  # "step() before optimizer.step()": intended here
                warnings.simplefilter("ignore", UserWarning)
                for _ in range(epochs_done):
                    trainer.scheduler.step()


def _remove_stale_temporaries(run_dir: Path) -> None:
    for folder in (run_dir, run_dir / "checkpoints"):
        if folder.is_dir():
            ckpt.remove_stale_temporaries(folder)


class MetricsLog(Callback):
    """``metrics.jsonl``: one line per epoch; on resume, the lines of epochs after the
    checkpoint go (they are trained again)."""

    def __init__(self, run_dir: Path | None):
        self.path = run_dir / METRICS if run_dir is not None else None

    def on_fit_start(self, trainer, resume: bool) -> None:
        if resume and self.path is not None and trainer.world.main:
            rows = ckpt.read_jsonl(self.path)
            ckpt.write_jsonl(self.path, [r for r in rows
                                         if r.get("epoch", math.inf) <= trainer.state.epoch])

    def on_epoch_end(self, trainer, row: dict) -> None:
        if self.path is not None and trainer.world.main:
            ckpt.write_jsonl(self.path, ckpt.read_jsonl(self.path) + [row])


class EpochLog(Callback):
    """One console line per epoch (rank 0): train and validation ELBO, KL, speed, *best."""

    def on_epoch_end(self, trainer, row: dict) -> None:
        if not trainer.world.main:
            return
        valid = row.get("valid_elbo")
        log.info("epoch %d/%d  train elbo %.3f  valid elbo %s  kl %.3f  %.0f img/s%s",
                 row["epoch"], trainer.cfg.train.epochs, row["train_elbo"],
                 f"{valid:.3f}" if valid is not None else "-", row["train_kl"],
                 row["images_per_second"],
                 "  *best" if trainer.state.best_epoch == trainer.state.epoch else "")


class EarlyStopping(Callback):
    """End training after ``patience`` epochs without a better validation objective (0:
    never; a run without validation data has nothing to watch)."""

    def __init__(self, patience: int):
        self.patience = patience

    def on_epoch_end(self, trainer, row: dict) -> None:
        if (self.patience and "valid_objective" in row
                and trainer.state.bad_epochs >= self.patience):
            if trainer.world.main:
                log.info("early stopping: no better validation objective for %d epochs",
                         self.patience)
            trainer.should_stop = True


class Interrupts(Callback):
    """Ctrl-C or SIGTERM asks the loop to stop at the next batch boundary, so the saved
    state is always a consistent one; a second Ctrl-C stops at once. (Signal handlers can
    only be set from the main thread: elsewhere nothing is installed.)"""

    def __init__(self):
        self._old: dict = {}

    def on_fit_start(self, trainer, resume: bool) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def request(signum, frame):
            if trainer.stop_requested:
                raise KeyboardInterrupt
            trainer.request_stop()
            if trainer.world.main:
                log.warning("interrupt: saving at the end of this batch (press Ctrl-C again to "
                            "stop now)")

        self._old = {sig: signal.signal(sig, request) for sig in (signal.SIGINT, signal.SIGTERM)}

    def on_fit_end(self, trainer) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old = {}
