"""The training loop: knows the objective it is given, not the model behind it.

- In-memory batches: one ``randperm`` per epoch and tensor indexing, no per-example Python.
- Adam, an optional per-epoch learning-rate schedule, KL warm-up (beta rises linearly per
  step), IWAE training with K samples, gradient clipping; the pieces (optimiser, schedule,
  warm-up, weight average, mixed precision, gradient checks) are built in ``optim.py``.
- Validation uses the training objective evaluated the same way, at the target beta;
  the best epoch by that number is kept, and training stops early after ``patience``
  epochs without improvement.
- Checkpoints ``latest`` and ``best`` (safetensors, atomic) hold the model, optimiser,
  schedule, epoch, every random generator's state and the config, so that a resumed run
  ends with the same parameters as an uninterrupted one, bit for bit on a CPU with the
  same thread count. Ctrl-C (or SIGTERM) mid-epoch saves the exact position in the epoch.
- NaN guard: a non-finite loss, gradient or validation value stops training with the
  epoch, batch and quantity, before anything is written; the last good checkpoint stays.
- Noise: the reparameterisation's eps for each global batch comes from the trainer's own
  generator (saved in checkpoints), and validation uses the same fixed eps every epoch, so
  epochs are compared on equal terms.
- Distributed (torchrun): the model is wrapped in DistributedDataParallel; every process
  draws the same permutation and the same eps for the global batch and takes its own
  contiguous slice of it; the loss is sum / (global batch size), so the averaged gradient
  is exactly the one-process gradient. Stop and NaN flags are agreed on collectively; only
  rank 0 writes files.
- Without a run directory (``run_dir=None``, as the scikit-learn estimator uses it) nothing
  is written: the best weights are kept in memory.
- Weight averaging (``train.ema_decay``): torch's ``AveragedModel`` keeps an exponential
  moving average of the weights, updated after every step; validation reads the average and
  the checkpoints hold it beside the trained weights (``ema.*``), so what a run keeps and
  evaluates is the average (:func:`kept_weights`) and a resume continues both exactly.
"""

from __future__ import annotations

import gc
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .callbacks import (Callback, Checkpoints, EarlyStopping, EpochLog, FunctionCallbacks,
                        Interrupts, MetricsLog)
from .checkpoint import LATEST
from . import distributed
from . import fused
from .devices import resolve_device, to_device, wide_dtype  # noqa: F401 (resolve_device: public here too)
from .errors import TrainingDiverged, VaekitError
from .objectives import Terms, objective_for
from .optim import (adam_step, autocast, beta_at, grad_check, make_ema, make_grad_scaler,
                    make_optimizer, make_scheduler, normalize_grads)

log = logging.getLogger(__name__)

SUM_KEYS = ("loss", "elbo", "reconstruction", "kl")
#: steps between the NaN guard's checks on a GPU (each check is a host sync)
CHECK_EVERY = 16


class _StopAtBoundary(Exception):
    """Raised between batches after Ctrl-C/SIGTERM: the state is consistent and is saved."""


@dataclass
class TrainState:
    epoch: int = 0  # epochs completed
    batch: int = 0  # batches completed in the current epoch (non-zero only after Ctrl-C)
    step: int = 0  # optimiser steps done
    best: float = -math.inf  # best validation objective
    best_epoch: int = 0
    bad_epochs: int = 0  # epochs since the best
    sums: dict = field(default_factory=dict)  # running sums of the current epoch
    seconds: float = 0.0  # training wall time so far
    engine: str = ""  # "autograd" or "fused", as this run began ("": before engines existed)




def check_interval(device: torch.device) -> int:
    """Steps between the NaN guard's and the stop request's checks: every step on a CPU,
    where a check costs nothing, every CHECK_EVERY steps elsewhere."""
    return 1 if device.type == "cpu" else CHECK_EVERY


class ObjectiveStep(nn.Module):
    """The training objective as a module's forward, so DistributedDataParallel (which
    synchronises gradients for what runs through ``forward``) can wrap it."""

    def __init__(self, model: nn.Module, objective: Callable[..., Terms]):
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, x: torch.Tensor, beta: float, noise: torch.Tensor | None,
                y: torch.Tensor | None = None) -> Terms:
        # a conditional model with the batch's classes fixed: the objective sees the contract
        return self.objective(self.model.given(y) if y is not None else self.model, x, beta, noise)


class Trainer:
    """Fits ``model`` by minimising ``objective(model, x, beta, noise).loss`` on ``data``."""

    def __init__(self, model, data, cfg, run_dir: str | Path | None,
                 objective: Callable[..., Terms] | None = None,
                 callbacks: dict[str, list[Callable]] | list | None = None,
                 valid_seed: int | None = None):
        self.model = model
        self.data = data
        self.cfg = cfg
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.custom_objective = objective is not None
        self.objective = objective or objective_for(cfg.train.importance_samples)
        self.samples = max(1, cfg.train.importance_samples)
        # the validation eps; restarts of one run share it, so their numbers compare fairly
        self.valid_seed = cfg.train.seed + 3 if valid_seed is None else valid_seed
        # the parts: the trainer's own, then the user's (Callback objects, or minGPT-style
        # functions {"on_batch_end": [fn(trainer)], "on_epoch_end": [fn(trainer, row)]}),
        # early stopping last (see vaekit.callbacks)
        self.checkpoints = Checkpoints(self.run_dir)
        user = callbacks if isinstance(callbacks, (list, tuple)) else [callbacks or {}]
        self.parts: list[Callback] = [
            MetricsLog(self.run_dir), self.checkpoints, EpochLog(), Interrupts(),
            *(c if isinstance(c, Callback) else FunctionCallbacks(c) for c in user),
            EarlyStopping(cfg.train.patience)]
        self.stop_requested = False  # Ctrl-C, or request_stop(): stop at the next batch
        self.should_stop = False  # a part ends training after this epoch (early stopping)
        device = resolve_device(cfg.train.device)
        if cfg.train.precision == "fp16" and device.type == "cpu":
            raise VaekitError("fp16 autocast needs a GPU; use --set train.precision=\"bf16\" on a CPU")
        self.world = distributed.setup(device, cfg.train.backend)
        self.device = distributed.device_for(device, self.world)
        self.model.to(self.device)
        self.step_module: nn.Module = ObjectiveStep(self.model, self.objective)
        if self.world.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            # no buffer changes during training (priors' constants): nothing to broadcast
            self.step_module = DistributedDataParallel(self.step_module, device_ids=ids,
                                                       broadcast_buffers=False)
        self.ema = make_ema(self.model, cfg.train.ema_decay)
        self.optimizer = make_optimizer(model, cfg)
        self.scheduler = make_scheduler(self.optimizer, cfg)
        self.scaler = make_grad_scaler(self.device) if cfg.train.precision == "fp16" else None
        self.generator = torch.Generator().manual_seed(cfg.train.seed + 1)  # shuffles, binarisation
        self.epoch_generator_state = self.generator.get_state()
        self.noise = torch.Generator().manual_seed(cfg.train.seed + 2)  # eps of each global batch
        self.state = TrainState()
        self.fused: fused.FusedStep | None = None
        self.choose_engine(None)
        # steps between NaN/stop checks: each check waits for the device, free on a CPU
        self.check_every = check_interval(self.device)
        self._train_on_device: torch.Tensor | None = None
        # a conditional model reads each example's class beside it
        self.conditional = model.conditional
        self.labels = (to_device(data.train_labels, self.device) if self.conditional else None)
        self.history: list[dict] = []

    def choose_engine(self, begun_with: str | None) -> None:
        """Fused step or autograd, from train.engine; with "auto", a resumed run keeps the
        engine it began with (``begun_with``), whose rounding its first epochs followed."""
        wanted = self.cfg.train.engine
        self.fused = None
        self._engine_note = "autograd (train.engine)"
        if wanted == "auto" and begun_with is not None and begun_with != "fused":
            self._engine_note = "autograd, as this run began"
            return
        if wanted == "autograd":
            return
        if wanted == "auto" and self.device.type != "cpu":  # measured on CPUs only
            self._engine_note = "autograd (train.engine=\"fused\" uses the fused step here)"
            return
        fused.require(self.model, self.cfg, self.custom_objective, self.world.distributed)
        step, reason = fused.fused_step_for(self.model, self.cfg, self.custom_objective,
                                            self.world.distributed)
        self.fused = step
        self._engine_note = (f"autograd (the fused step does not cover {reason})" if step is None
                             else "fused (hand-derived gradients)")

    @property
    def engine(self) -> str:
        return "fused" if self.fused is not None else "autograd"

    def close(self) -> None:
        """Let go of DistributedDataParallel before the process group is destroyed: its
        reducer refers to the group, and one torn down at interpreter exit after the group
        can abort the process ("terminate called without an active exception")."""
        if self.world.distributed:
            self.step_module = ObjectiveStep(self.model, self.objective)
            gc.collect()

    @property
    def writes(self) -> bool:
        return self.run_dir is not None and self.world.main

    @property
    def best_weights(self) -> dict[str, torch.Tensor] | None:
        """The kept model's best weights, in memory, for a trainer without a run directory."""
        return self.checkpoints.best_weights

    def restore(self, path: str | Path | None = None) -> None:
        """The training state of a checkpoint (default: the run's latest), as a resume."""
        self.checkpoints.restore(self, path)

    # ------------------------------------------------------------------------ loop

    def _check(self, guard: "_Guard", terms: Terms | None, last: int, stop: bool = True) -> None:
        """Raise if a step since the last check was not finite (in any process), then, with
        ``stop``, if any process was asked to stop (Ctrl-C): one host sync, one all-reduce.
        ``last`` is the batch of the last step taken."""
        agreed_stop, bad = guard.agree(self.stop_requested, self.world)
        if bad is not None:
            batch, here = bad
            batch = batch if here else last
            what = (self._culprit(terms, terms.loss.sum()) if here and terms is not None
                    else "the loss or a gradient is not finite in another process")
            raise TrainingDiverged(self._diverged(what, batch))
        self.stop_requested = self.stop_requested or agreed_stop
        if stop and self.stop_requested:
            raise _StopAtBoundary

    def _epoch_on_device(self, x_epoch: torch.Tensor) -> torch.Tensor:
        """The epoch's training inputs on the device; data that do not change between epochs
        (no dynamic binarisation) are copied once per fit."""
        if x_epoch is self.data.train:
            if self._train_on_device is None:
                self._train_on_device = to_device(x_epoch, self.device)
            return self._train_on_device
        return to_device(x_epoch, self.device)

    def _culprit(self, terms: Terms, loss: torch.Tensor) -> str:
        """Which quantity went non-finite (only on the way to raising: it syncs freely)."""
        if not bool(torch.isfinite(loss)):
            parts = {"reconstruction": terms.reconstruction, "KL": terms.kl}
            what = next((name for name, t in parts.items() if not torch.isfinite(t).all()), "loss")
            return f"the {what} is {float(loss.detach()):g}"
        name = next((nm for nm, p in self.model.named_parameters()
                     if p.grad is not None and not torch.isfinite(p.grad).all()), None)
        if name is not None:
            return f"the gradient of {name} is not finite"
        return "the loss or gradient is not finite in another process"

    def _diverged(self, what: str, batch: int) -> str:
        good = (f"the last good checkpoint (epoch {self.state.epoch}) is intact in "
                f"{self.run_dir / LATEST}" if self.run_dir and (self.run_dir / LATEST).exists()
                else "no checkpoint was written yet")
        return (f"training diverged at epoch {self.state.epoch + 1}, batch {batch + 1}: {what}; "
                f"{good}. Try a lower learning rate (--lr {self.cfg.train.lr / 10:g}), "
                "gradient clipping (--set train.grad_clip=10), KL warm-up "
                "(--set train.warmup_epochs=10) or a likelihood that fits the data")

    @torch.no_grad()
    def validate(self) -> dict | None:
        """The training objective on the validation set (target beta, same K), with the
        same eps every epoch (a fixed generator) so epochs are compared on equal terms."""
        x = self.data.valid
        if x is None or len(x) == 0:
            return None
        kept = self.kept_model
        kept.eval()
        bs = max(self.cfg.train.batch_size, 256)
        gen = torch.Generator().manual_seed(self.valid_seed)
        sums = {"objective": 0.0, "elbo": 0.0, "reconstruction": 0.0, "kl": 0.0}
        labels = self.data.valid_labels if self.conditional else None
        for i in range(0, len(x), bs):
            xb = x[i:i + bs].to(self.device)
            model = kept.given(labels[i:i + bs].to(self.device)) if self.conditional else kept
            noise = torch.randn(self.samples, len(xb), *kept.noise_shape, generator=gen)
            with autocast(self.device, self.cfg.train.precision):
                terms = self.objective(model, xb, self.cfg.train.beta, noise.to(self.device))
            sums["objective"] += float(-terms.loss.sum())
            sums["elbo"] += float(terms.elbo.sum())
            sums["reconstruction"] += float(terms.reconstruction.sum())
            sums["kl"] += float(terms.kl.sum())
        self.model.train()  # (the average is never trained: it stays in eval mode)
        return {k: v / len(x) for k, v in sums.items()}

    @property
    def kept_model(self) -> nn.Module:
        """The model that is validated and kept: the weight average, else the model."""
        return self.ema.module if self.ema is not None else self.model

    def request_stop(self) -> None:
        """Stop at the next batch boundary and save the exact position (what Ctrl-C does)."""
        self.stop_requested = True

    def fit(self, resume: bool = False) -> dict:
        """Train to ``train.epochs`` (or until a part stops it), from the run's latest
        checkpoint with ``resume``. The epochs: each trains its batches (:meth:`_train_epoch`,
        one :meth:`_step` per batch), then :meth:`_end_epoch` validates and hands the
        epoch's row to the parts."""
        if resume:
            self.restore()
        try:
            for part in self.parts:
                part.on_fit_start(self, resume)
            return self._fit()
        finally:
            for part in self.parts:
                part.on_fit_end(self)

    def _fit(self) -> dict:
        t = self.cfg.train
        self.state.engine = self.engine
        if self.world.main:
            log.info("training step: %s", self._engine_note)
        self._stepped = False  # optimizer.step() called once in this fit (LR schedulers check)
        self._params = [p for p in self.model.parameters() if p.requires_grad]
        self.model.train()
        interrupted = stopped_early = False
        while self.state.epoch < t.epochs:
            epoch = self.state.epoch
            done = self._train_epoch()
            if done is None:  # Ctrl-C: the exact position was saved
                interrupted = True
                break
            elapsed, seen_at_start = done
            if self._end_epoch(epoch, elapsed, seen_at_start):
                stopped_early = True
                break
        return {"epochs": self.state.epoch, "steps": self.state.step, "best_epoch": self.state.best_epoch,
                "best_valid_objective": self.state.best, "interrupted": interrupted,
                "stopped_early": stopped_early, "train_seconds": round(self.state.seconds, 3),
                "world_size": self.world.size, "engine": self.engine,
                "refit": bool(getattr(getattr(self.data, "spec", None), "refit", False))}

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.data.train) / self.cfg.train.batch_size)

    def _train_epoch(self) -> tuple[float, int] | None:
        """The remaining batches of the current epoch: (seconds, examples seen before them),
        or None when a stop request ended it (the position saved)."""
        t = self.cfg.train
        epoch, steps = self.state.epoch, self.steps_per_epoch
        # epoch_generator_state is where this epoch's shuffling and binarisation start;
        # replaying from it makes a resumed epoch (at any batch) draw the same data.
        self.generator.set_state(self.epoch_generator_state)
        if self.state.batch == 0:
            self.state.sums = {"loss": 0.0, "elbo": 0.0, "reconstruction": 0.0, "kl": 0.0, "n": 0}
        x_epoch = self.data.train_epoch(self.generator)
        order = torch.randperm(len(self.data.train), generator=self.generator)
        if self.device.type != "cpu":  # the epoch's data on the device: one copy, not one a step
            x_epoch, order = self._epoch_on_device(x_epoch), to_device(order, self.device)
        start = shown = time.perf_counter()
        seen_at_start = self.state.sums["n"]
        sums = _DeviceSums(self.device, self.state.sums)  # no host sync per step
        guard = _Guard(self.device)
        bar = _progress(steps, self.state.batch, epoch, t) if self.world.main else None
        try:
            first, terms = self.state.batch, None
            for b in range(first, steps):
                # the stop request and the NaN flags of the steps since the last check,
                # agreed by all processes (one all-reduce) before anything is drawn for this
                # batch: every step on a CPU, every `check_every` steps on a GPU (each check
                # waits for the device)
                if (b - first) % self.check_every == 0 or self.world.distributed:
                    self._check(guard, terms if b > first else None, b - 1)
                terms = self._step(b, x_epoch, order, guard, sums)
                for part in self.parts:
                    part.on_batch_end(self)
                if bar is not None:
                    bar.update(1)
                    if time.perf_counter() - shown > 0.5:  # the numbers twice a second
                        shown = time.perf_counter()
                        _show(bar, sums.flush(), seen_at_start, shown - start, self.world.size)
            self._check(guard, terms, steps - 1, stop=False)  # before any write
            sums.flush()
        except _StopAtBoundary:
            sums.flush()
            self.state.seconds += time.perf_counter() - start
            if bar is not None:
                bar.close()
                bar = None
            self.checkpoints.save(self)  # exact mid-epoch position: resume continues bit for bit
            return None
        finally:
            if bar is not None:
                bar.close()
        return time.perf_counter() - start, seen_at_start

    def _step(self, b: int, x_epoch, order, guard: "_Guard", sums: "_DeviceSums") -> Terms:
        """One optimiser step on batch b of the epoch's order."""
        t = self.cfg.train
        bs = t.batch_size
        idx = order[b * bs:(b + 1) * bs]  # the global batch
        # drawn on the CPU from the trainer's generator, whatever the device: the same eps on
        # every device and process count
        eps = torch.randn(self.samples, len(idx), *self.model.noise_shape, generator=self.noise)
        lo, hi = _shard(len(idx), self.world)
        # index_select: the rows x_epoch[idx] gives, ~40% faster from cold memory
        xb = x_epoch.index_select(0, idx[lo:hi])
        beta = beta_at(self.state.step, self.steps_per_epoch, self.cfg)
        if self.fused is not None:  # loss and gradients in one hand-derived pass
            terms, loss = self.fused(xb, beta, eps)
        else:
            yb = self.labels.index_select(0, idx[lo:hi]) if self.conditional else None
            with autocast(self.device, t.precision):
                terms = self.step_module(xb, beta, to_device(eps[:, lo:hi], self.device), yb)
            loss = shard_loss(terms, self.world.size, len(idx))
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler:
                self.scaler.scale(loss).backward()
                self.scaler.unscale_(self.optimizer)
            else:
                loss.backward()
        grad_size = grad_check(self._params, t.grad_clip)
        if t.grad_normalize:
            normalize_grads(self._params)
        # the loss and (without a GradScaler, which skips such steps itself) the gradient
        # must be finite; on a GPU this is checked every check_every steps, not every step
        # (each check is a host sync), and always before anything is written: a bad step
        # found late has changed only the in-memory weights, never a file
        finite = torch.isfinite(loss) & (torch.isfinite(grad_size) if not self.scaler else True)
        if self.check_every == 1 and not self.world.distributed:
            if not bool(finite):  # on a CPU: before the update, naming the culprit
                raise TrainingDiverged(self._diverged(self._culprit(terms, loss), b))
        else:
            guard.record(finite, b)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        elif not (self._stepped and adam_step(self.optimizer)):
            self.optimizer.step()  # the first step of a fit: creates the state
            self._stepped = True
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        sums.add(terms, len(xb))
        self.state.step += 1
        self.state.batch = b + 1
        return terms

    def _end_epoch(self, epoch: int, elapsed: float, seen_at_start: int) -> bool:
        """Validation, the metrics row, the schedule and the best epoch, then the parts (the
        metrics line, checkpoints, the log, the user's callbacks, early stopping); True when
        a part ends training."""
        self.state.seconds += elapsed
        valid = self.validate()
        if valid is not None and not math.isfinite(valid["objective"]):
            raise TrainingDiverged(self._diverged("the validation objective is not finite",
                                                  self.steps_per_epoch - 1))
        s = self.state.sums
        keys = ("loss", "elbo", "reconstruction", "kl", "n")
        totals = dict(zip(keys, distributed.all_sum([float(s[k]) for k in keys], self.device)))
        seen = totals["n"] - seen_at_start * self.world.size
        row = {
            "epoch": epoch + 1,
            "step": self.state.step,
            "train_loss": totals["loss"] / totals["n"],
            "train_elbo": totals["elbo"] / totals["n"],
            "train_reconstruction": totals["reconstruction"] / totals["n"],
            "train_kl": totals["kl"] / totals["n"],
            **({f"valid_{k}": v for k, v in valid.items()} if valid else {}),
            "beta": beta_at(self.state.step - 1, self.steps_per_epoch, self.cfg),
            "lr": self.optimizer.param_groups[0]["lr"],
            "seconds": round(elapsed, 3),
            "images_per_second": round(seen / max(elapsed, 1e-9), 1),
        }
        if self.scheduler:
            self.scheduler.step()
        # without validation data the last epoch is the one kept
        score = valid["objective"] if valid else -row["train_loss"]
        improved = valid is None or score > self.state.best
        if improved:
            self.state.best, self.state.best_epoch, self.state.bad_epochs = score, epoch + 1, 0
        else:
            self.state.bad_epochs += 1
        self.state.epoch, self.state.batch, self.state.sums = epoch + 1, 0, {}
        self.epoch_generator_state = self.generator.get_state()
        self.history.append(row)
        for part in self.parts:  # the metrics line, the checkpoints, the log, the user's, ...
            part.on_epoch_end(self, row)
        return self.should_stop


class _DeviceSums:
    """Loss, ELBO, reconstruction and KL summed on the device since the last flush (no
    host sync per step: on a GPU each costs a pipeline stall); flush adds them to the
    epoch's running sums (a dict of floats, saved in checkpoints)."""

    def __init__(self, device: torch.device, into: dict):
        self.acc = torch.zeros(4, dtype=wide_dtype(device), device=device)
        self.pending = 0
        self.into = into

    def add(self, terms: Terms, n: int) -> None:
        self.acc += torch.stack([terms.loss.detach().sum(), terms.elbo.detach().sum(),
                                 terms.reconstruction.detach().sum(),
                                 terms.kl.detach().sum()]).to(self.acc.dtype)
        self.pending += n

    def flush(self) -> dict:
        for key, value in zip(SUM_KEYS, self.acc.tolist()):
            self.into[key] += value
        self.into["n"] += self.pending
        self.acc.zero_()
        self.pending = 0
        return self.into


def _show(bar, s: dict, seen_at_start: int, seconds: float, world_size: int) -> None:
    rate = (s["n"] - seen_at_start) / max(seconds, 1e-9)
    bar.set_postfix(loss=f"{s['loss'] / s['n']:.2f}", elbo=f"{s['elbo'] / s['n']:.2f}",
                    kl=f"{s['kl'] / s['n']:.2f}", img_s=f"{rate * world_size:.0f}", refresh=False)


class _Guard:
    """The NaN guard's flags on the device: whether a step since the last check was not
    finite, and the first such batch, recorded without a host sync."""

    def __init__(self, device: torch.device):
        self.device = device
        self.bad = torch.zeros((), dtype=torch.bool, device=device)
        self.first = torch.zeros((), dtype=torch.int64, device=device)

        self.recorded = False

    def record(self, finite: torch.Tensor, batch: int) -> None:
        self.first = torch.where(self.bad, self.first, batch)
        self.bad = self.bad | ~finite.reshape(())
        self.recorded = True

    def agree(self, stop: bool, world) -> tuple[bool, tuple[int, bool] | None]:
        """(any process asked to stop, (first bad batch, whether it was this process's) or
        None); resets the flags."""
        if not self.recorded and not world.distributed:  # a CPU process alone: nothing to ask
            return stop, None
        self.recorded = False
        mine = self.bad.reshape(1).float()
        flags = distributed.max_across(torch.cat([torch.tensor([float(stop)], device=self.device),
                                                   mine]))
        values = torch.cat([flags, mine, self.first.reshape(1).float()]).tolist()
        any_stop, any_bad, bad_here, first = values
        self.bad = torch.zeros_like(self.bad)
        if any_bad:
            return bool(any_stop), (int(first) if bad_here else -1, bool(bad_here))
        return bool(any_stop), None


def shard_loss(terms: Terms, world_size: int, global_batch: int) -> torch.Tensor:
    """This process's share of the loss: sum over its examples / global batch size, times
    the number of processes, which DistributedDataParallel's gradient average divides out.
    The averaged gradient is then the gradient of the mean over the global batch, however
    unevenly the batch was split."""
    return terms.loss.sum() * (world_size / global_batch)


def _shard(n: int, world) -> tuple[int, int]:
    """This process's contiguous slice [lo, hi) of a global batch of n examples."""
    per, extra = divmod(n, world.size)
    lo = world.rank * per + min(world.rank, extra)
    return lo, lo + per + (1 if world.rank < extra else 0)


def _progress(total: int, initial: int, epoch: int, t):
    if not t.progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=f"epoch {epoch + 1}/{t.epochs}", unit="batch",
                leave=False, disable=None, dynamic_ncols=True)
