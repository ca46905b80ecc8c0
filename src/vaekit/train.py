"""The training loop: knows the objective it is given, not the model behind it.

- In-memory batches: one ``randperm`` per epoch and tensor indexing, no per-example Python.
- Adam, an optional per-epoch learning-rate schedule, KL warm-up (beta rises linearly per
  step), IWAE training with K samples, gradient clipping.
- Validation uses the training objective evaluated the same way, at the target beta;
  the best epoch by that number is kept, and training stops early after ``patience``
  epochs without improvement.
- Checkpoints ``latest`` and ``best`` (safetensors, atomic) hold the model, optimiser,
  schedule, epoch, every random generator's state and the config, so that a resumed run
  ends with the same parameters as an uninterrupted one, bit for bit on a CPU with the
  same thread count. Ctrl-C (or SIGTERM) mid-epoch saves the exact position in the epoch.
- NaN guard: a non-finite loss, gradient or validation value stops training with the
  epoch, batch and quantity, before anything is written; the last good checkpoint stays.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from . import checkpoint as ckpt
from .errors import CheckpointError, TrainingDiverged, VaekitError
from .objectives import Terms, objective_for

log = logging.getLogger(__name__)

LATEST = "checkpoints/latest.safetensors"
BEST = "checkpoints/best.safetensors"
METRICS = "metrics.jsonl"


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


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise VaekitError("--device cuda was asked for but no CUDA GPU is "
                                        "available; use --device cpu or auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise VaekitError("--device mps was asked for but MPS is not available; "
                                        "use --device cpu or auto")
    return torch.device(name)


def make_optimizer(model, cfg) -> torch.optim.Optimizer:
    """Adam; the fused kernel (one pass over all parameters, 3-4x faster than the default
    per-tensor loops on a CPU) wherever this torch build has it for the device."""
    params = list(model.parameters())
    try:
        return torch.optim.Adam(params, lr=cfg.train.lr, fused=True)
    except (RuntimeError, TypeError, ValueError):  # older torch, or a device without it
        return torch.optim.Adam(params, lr=cfg.train.lr)


def make_scheduler(optimizer, cfg):
    t = cfg.train
    if t.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=t.epochs)
    if t.lr_schedule == "exponential":
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=t.lr_gamma)
    return None


def beta_at(step: int, steps_per_epoch: int, cfg) -> float:
    """KL weight: linear warm-up from 0 to beta over ``warmup_epochs`` epochs of steps."""
    warm = cfg.train.warmup_epochs * steps_per_epoch
    if warm <= 0:
        return cfg.train.beta
    return cfg.train.beta * min(1.0, (step + 1) / warm)


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


class Trainer:
    """Fits ``model`` by minimising ``objective(model, x, beta).loss`` on ``data``."""

    def __init__(self, model, data, cfg, run_dir: str | Path,
                 objective: Callable[..., Terms] | None = None,
                 callbacks: dict[str, list[Callable]] | None = None):
        self.model = model
        self.data = data
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.objective = objective or objective_for(cfg.train.importance_samples)
        # minGPT-style hooks: "on_batch_end"(trainer) and "on_epoch_end"(trainer, row)
        self.callbacks: dict[str, list[Callable]] = {"on_batch_end": [], "on_epoch_end": []}
        for event, fns in (callbacks or {}).items():
            if event not in self.callbacks:
                raise ValueError(f"unknown callback event {event!r}; use {sorted(self.callbacks)}")
            self.callbacks[event].extend(fns)
        self._stop_requested = False
        self.device = resolve_device(cfg.train.device)
        if cfg.train.precision == "fp16" and self.device.type == "cpu":
            raise VaekitError("fp16 autocast needs a GPU; use --set "
                                            "train.precision=\"bf16\" on a CPU")
        self.model.to(self.device)
        self.optimizer = make_optimizer(model, cfg)
        self.scheduler = make_scheduler(self.optimizer, cfg)
        self.scaler = torch.amp.GradScaler(self.device.type) if cfg.train.precision == "fp16" else None
        self.generator = torch.Generator().manual_seed(cfg.train.seed + 1)  # shuffles, binarisation
        self.epoch_generator_state = self.generator.get_state()
        self.state = TrainState()

    # ----------------------------------------------------------------- checkpoints

    def _checkpoint_bytes(self) -> bytes:
        tensors: dict[str, torch.Tensor] = {}
        for k, v in self.model.state_dict().items():
            tensors[f"model.{k}"] = v.detach().cpu().contiguous()
        optim = ckpt.split_state(self.optimizer.state_dict(), "optim", tensors)
        sched = ckpt.split_state(self.scheduler.state_dict(), "sched", tensors) if self.scheduler else None
        tensors.update(ckpt.rng_state())
        tensors["rng.data_epoch"] = self.epoch_generator_state
        tensors["rng.data"] = self.generator.get_state()
        meta = {
            "kind": "training",
            "state": asdict(self.state),
            "optimizer": optim,
            "scheduler": sched,
            "config": self.cfg.to_dict(),
            "versions": versions(),
        }
        return ckpt.to_bytes(tensors, meta)

    def save(self, best: bool = False) -> None:
        blob = self._checkpoint_bytes()
        ckpt.atomic_write_bytes(self.run_dir / LATEST, blob)
        if best:
            ckpt.atomic_write_bytes(self.run_dir / BEST, blob)

    def restore(self, path: str | Path | None = None) -> None:
        tensors, meta = ckpt.load(path or self.run_dir / LATEST)
        if meta.get("kind") != "training":
            raise CheckpointError(f"{path or self.run_dir / LATEST} holds no training state")
        model_state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
        load_model_state(self.model, model_state, self.run_dir)
        try:
            self.optimizer.load_state_dict(ckpt.join_state(meta["optimizer"], tensors))
            if self.scheduler and meta.get("scheduler") is not None:
                self.scheduler.load_state_dict(ckpt.join_state(meta["scheduler"], tensors))
        except (KeyError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"the optimiser state in the checkpoint does not fit this "
                                  f"model ({e}); resume with the run's own config") from None
        saved_lr = meta.get("config", {}).get("train", {}).get("lr")
        if saved_lr is not None and saved_lr != self.cfg.train.lr:  # --lr given on resume
            log.info("learning rate changed on resume: %g -> %g", saved_lr, self.cfg.train.lr)
            for group in self.optimizer.param_groups:
                group["lr"] = self.cfg.train.lr
                if "initial_lr" in group:
                    group["initial_lr"] = self.cfg.train.lr
            if self.scheduler:
                self.scheduler.base_lrs = [self.cfg.train.lr] * len(self.optimizer.param_groups)
        ckpt.set_rng_state(tensors)
        self.epoch_generator_state = tensors["rng.data_epoch"]
        self.generator.set_state(tensors["rng.data"])
        self.state = TrainState(**meta["state"])

    # ------------------------------------------------------------------------ loop

    def _metrics_lines(self) -> list[str]:
        path = self.run_dir / METRICS
        if not path.exists():
            return []
        return [line for line in path.read_text().splitlines() if line.strip()]

    def _trim_metrics(self) -> None:
        """On resume, drop metric lines of epochs the checkpoint does not include."""
        keep = []
        for line in self._metrics_lines():
            try:
                if json.loads(line)["epoch"] <= self.state.epoch:
                    keep.append(line)
            except (ValueError, KeyError):
                continue  # a torn last line from a killed process
        ckpt.atomic_write_text(self.run_dir / METRICS, "".join(l + "\n" for l in keep))

    def _append_metrics(self, row: dict) -> None:
        lines = self._metrics_lines() + [json.dumps(row)]
        ckpt.atomic_write_text(self.run_dir / METRICS, "".join(l + "\n" for l in lines))

    def _check_finite(self, terms: Terms, loss: torch.Tensor, batch: int) -> None:
        if torch.isfinite(loss):
            return
        parts = {"reconstruction": terms.reconstruction, "KL": terms.kl}
        what = next((name for name, t in parts.items() if not torch.isfinite(t).all()), "loss")
        raise TrainingDiverged(self._diverged(f"the {what} is {float(loss.detach()):g}", batch))

    def _diverged(self, what: str, batch: int) -> str:
        good = (f"the last good checkpoint (epoch {self.state.epoch}) is intact in "
                f"{self.run_dir / LATEST}" if (self.run_dir / LATEST).exists()
                else "no checkpoint was written yet")
        return (f"training diverged at epoch {self.state.epoch + 1}, batch {batch + 1}: {what}; "
                f"{good}. Try a lower learning rate (--lr {self.cfg.train.lr / 10:g}), "
                "gradient clipping (--set train.grad_clip=10), KL warm-up "
                "(--set train.warmup_epochs=10) or a likelihood that fits the data")

    @torch.no_grad()
    def validate(self) -> dict:
        """The training objective on the validation set (target beta, same K)."""
        self.model.eval()
        x = self.data.valid
        bs = max(self.cfg.train.batch_size, 256)
        sums = {"objective": 0.0, "elbo": 0.0, "reconstruction": 0.0, "kl": 0.0}
        for i in range(0, len(x), bs):
            xb = x[i:i + bs].to(self.device)
            with _autocast(self.device, self.cfg.train.precision):
                terms = self.objective(self.model, xb, self.cfg.train.beta)
            sums["objective"] += float(-terms.loss.sum())
            sums["elbo"] += float(terms.elbo.sum())
            sums["reconstruction"] += float(terms.reconstruction.sum())
            sums["kl"] += float(terms.kl.sum())
        self.model.train()
        return {k: v / len(x) for k, v in sums.items()}

    def request_stop(self) -> None:
        """Stop at the next batch boundary and save the exact position (what Ctrl-C does)."""
        self._stop_requested = True

    def fit(self, resume: bool = False) -> dict:
        with self._deferred_interrupts():
            return self._fit(resume)

    @contextlib.contextmanager
    def _deferred_interrupts(self):
        """Ctrl-C or SIGTERM asks the loop to stop at the next batch boundary, so the saved
        state is always a consistent one; a second Ctrl-C stops at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def request(signum, frame):
            if self._stop_requested:
                raise KeyboardInterrupt
            self.request_stop()
            log.warning("interrupt: saving at the end of this batch (press Ctrl-C again to stop now)")

        old = {sig: signal.signal(sig, request) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)

    def _fit(self, resume: bool) -> dict:
        cfg, t = self.cfg, self.cfg.train
        if resume:
            _remove_stale_temporaries(self.run_dir)
            self.restore()
            self._trim_metrics()
        params = [p for p in self.model.parameters() if p.requires_grad]
        n = len(self.data.train)
        bs = t.batch_size
        steps_per_epoch = math.ceil(n / bs)
        self.model.train()
        interrupted = False
        stopped_early = False
        while self.state.epoch < t.epochs:
            epoch = self.state.epoch
            # epoch_generator_state is where this epoch's shuffling and binarisation start;
            # replaying from it makes a resumed epoch (at any batch) draw the same data.
            self.generator.set_state(self.epoch_generator_state)
            if self.state.batch == 0:
                self.state.sums = {"loss": 0.0, "elbo": 0.0, "reconstruction": 0.0, "kl": 0.0, "n": 0}
            x_epoch = self.data.train_epoch(self.generator)
            order = torch.randperm(n, generator=self.generator)
            start = time.perf_counter()
            seen_at_start = self.state.sums["n"]
            bar = _progress(steps_per_epoch, self.state.batch, epoch, t)
            try:
                for b in range(self.state.batch, steps_per_epoch):
                    if self._stop_requested:
                        raise _StopAtBoundary
                    xb = x_epoch[order[b * bs:(b + 1) * bs]].to(self.device, non_blocking=True)
                    beta = beta_at(self.state.step, steps_per_epoch, cfg)
                    with _autocast(self.device, t.precision):
                        terms = self.objective(self.model, xb, beta)
                    loss = terms.loss.mean()
                    self._check_finite(terms, loss, b)
                    self.optimizer.zero_grad(set_to_none=True)
                    if self.scaler:
                        self.scaler.scale(loss).backward()
                        self.scaler.unscale_(self.optimizer)
                    else:
                        loss.backward()
                    norm = _grad_norm(params, t.grad_clip)
                    if not torch.isfinite(norm) and not self.scaler:
                        name = next((nm for nm, p in self.model.named_parameters()
                                     if p.grad is not None and not torch.isfinite(p.grad).all()), "?")
                        raise TrainingDiverged(self._diverged(f"the gradient of {name} is not finite", b))
                    if self.scaler:
                        self.scaler.step(self.optimizer)
                        self.scaler.update()
                    else:
                        self.optimizer.step()
                    s = self.state.sums
                    k = len(xb)
                    s["loss"] += float(loss.detach()) * k
                    s["elbo"] += float(terms.elbo.detach().sum())
                    s["reconstruction"] += float(terms.reconstruction.detach().sum())
                    s["kl"] += float(terms.kl.detach().sum())
                    s["n"] += k
                    self.state.step += 1
                    self.state.batch = b + 1
                    for fn in self.callbacks["on_batch_end"]:
                        fn(self)
                    if bar is not None:
                        rate = (s["n"] - seen_at_start) / max(time.perf_counter() - start, 1e-9)
                        bar.set_postfix(loss=f"{s['loss'] / s['n']:.2f}", elbo=f"{s['elbo'] / s['n']:.2f}",
                                        kl=f"{s['kl'] / s['n']:.2f}", img_s=f"{rate:.0f}", refresh=False)
                        bar.update(1)
            except _StopAtBoundary:
                self.state.seconds += time.perf_counter() - start
                if bar is not None:
                    bar.close()
                self.save()  # exact mid-epoch position: resume continues bit for bit
                interrupted = True
                break
            finally:
                if bar is not None and not interrupted:
                    bar.close()
            elapsed = time.perf_counter() - start
            self.state.seconds += elapsed
            valid = self.validate()
            if not math.isfinite(valid["objective"]):
                raise TrainingDiverged(self._diverged("the validation objective is not finite",
                                                      steps_per_epoch - 1))
            s = self.state.sums
            row = {
                "epoch": epoch + 1,
                "step": self.state.step,
                "train_loss": s["loss"] / s["n"],
                "train_elbo": s["elbo"] / s["n"],
                "train_reconstruction": s["reconstruction"] / s["n"],
                "train_kl": s["kl"] / s["n"],
                "valid_objective": valid["objective"],
                "valid_elbo": valid["elbo"],
                "valid_reconstruction": valid["reconstruction"],
                "valid_kl": valid["kl"],
                "beta": beta_at(self.state.step - 1, steps_per_epoch, cfg),
                "lr": self.optimizer.param_groups[0]["lr"],
                "seconds": round(elapsed, 3),
                "images_per_second": round((s["n"] - seen_at_start) / max(elapsed, 1e-9), 1),
            }
            if self.scheduler:
                self.scheduler.step()
            improved = valid["objective"] > self.state.best
            if improved:
                self.state.best, self.state.best_epoch, self.state.bad_epochs = valid["objective"], epoch + 1, 0
            else:
                self.state.bad_epochs += 1
            self.state.epoch, self.state.batch, self.state.sums = epoch + 1, 0, {}
            self.epoch_generator_state = self.generator.get_state()
            self._append_metrics(row)
            self.save(best=improved)
            log.info("epoch %d/%d  train elbo %.3f  valid elbo %.3f  kl %.3f  %.0f img/s%s",
                     epoch + 1, t.epochs, row["train_elbo"], row["valid_elbo"], row["valid_kl"],
                     row["images_per_second"], "  *best" if improved else "")
            for fn in self.callbacks["on_epoch_end"]:
                fn(self, row)
            if t.patience and self.state.bad_epochs >= t.patience:
                stopped_early = True
                log.info("early stopping: no better validation objective for %d epochs", t.patience)
                break
        return {"epochs": self.state.epoch, "steps": self.state.step, "best_epoch": self.state.best_epoch,
                "best_valid_objective": self.state.best, "interrupted": interrupted,
                "stopped_early": stopped_early, "train_seconds": round(self.state.seconds, 3)}


def _remove_stale_temporaries(run_dir: Path) -> None:
    """Temporary files of writes that a killed process never renamed (never the real files)."""
    for folder in (run_dir, run_dir / "checkpoints"):
        for tmp in folder.glob(".*.tmp"):
            try:
                tmp.unlink()
            except OSError:
                pass


def _grad_norm(params, clip: float) -> torch.Tensor:
    """The gradients' global norm (non-finite if any gradient is), clipped when clip > 0."""
    if clip > 0:
        return torch.nn.utils.clip_grad_norm_(params, clip)
    grads = [p.grad for p in params if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


def _progress(total: int, initial: int, epoch: int, t):
    if not t.progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=f"epoch {epoch + 1}/{t.epochs}", unit="batch",
                leave=False, disable=None, dynamic_ncols=True)


def load_model_state(model, state: dict[str, torch.Tensor], where) -> None:
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        detail = next((l.strip() for l in first if "size mismatch" in l), first[-1] if first else "")
        raise CheckpointError(f"the weights in {where} do not fit the model its config describes "
                              f"({detail}); the run directory mixes files of different models") from None
    if missing or unexpected:
        raise CheckpointError(f"the weights in {where} do not fit the model its config describes "
                              f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]}); "
                              "the run directory mixes files of different models")


def versions() -> dict[str, str]:
    from . import __version__

    return {"vaekit": __version__, "torch": torch.__version__}
