"""Optimisation pieces of training, apart from the loop that uses them (train.py).

- The optimiser: Adam, or AdamW whose weight decay reaches the layers' weight matrices only;
  fused kernels where torch has them, and :func:`adam_step`, the fused Adam update without
  ``optimizer.step()``'s per-call bookkeeping.
- The per-epoch learning-rate schedule (held for ``lr_decay_start`` epochs, then cosine or
  exponential), the KL warm-up (:func:`beta_at`), the weight average (``train.ema_decay``).
- Mixed precision (autocast and fp16's loss scaler) and the gradient checks: clipping or a
  cheap finiteness sum, per-tensor normalisation.
"""

from __future__ import annotations

import contextlib
import logging
import math

import torch
from torch import nn

from .errors import VaekitError

log = logging.getLogger(__name__)


def decayed_weights(model) -> set[int]:
    """ids of the parameters that train.weight_decay shrinks: the weight matrices (kernels) of
    the linear and convolutional layers, not biases, prior parameters or pseudo-inputs."""
    layers = (torch.nn.Linear, torch.nn.modules.conv._ConvNd)
    return {id(m.weight) for m in model.modules() if isinstance(m, layers)}


def make_optimizer(model, cfg) -> torch.optim.Optimizer:
    """Adam, or AdamW on the layers' weight matrices with train.weight_decay > 0; the fused
    kernel (one pass over all parameters, 3-4x faster than the default per-tensor loops on a
    CPU) wherever this torch build has it for the device."""
    params = list(model.parameters())
    make, groups = torch.optim.Adam, params
    if cfg.train.weight_decay > 0:
        decayed = decayed_weights(model)
        make, groups = torch.optim.AdamW, [
            {"params": [p for p in params if id(p) in decayed], "weight_decay": cfg.train.weight_decay},
            {"params": [p for p in params if id(p) not in decayed], "weight_decay": 0.0}]
    try:
        return make(groups, lr=cfg.train.lr, fused=True)
    except (RuntimeError, TypeError, ValueError):  # older torch, or a device without it
        return make(groups, lr=cfg.train.lr)


def adam_step(optimizer: torch.optim.Optimizer) -> bool:
    """One update of torch's fused Adam as ``optimizer.step()`` makes it, calling the same
    kernel with the same arguments (bit-identical; tests/test_fused.py checks), without the
    step's per-call Python bookkeeping (hooks, profiler record, regrouping by device): ~0.1
    ms, a few percent of a small model's step on a CPU. Returns False, doing nothing, where
    the shortcut does not apply (another optimiser or options, state not yet created,
    registered hooks): the caller then calls ``optimizer.step()``."""
    fused_adam = getattr(torch, "_fused_adam_", None)
    if (fused_adam is None or type(optimizer) is not torch.optim.Adam
            or optimizer._optimizer_step_pre_hooks or optimizer._optimizer_step_post_hooks
            or getattr(optimizer, "grad_scale", None) is not None
            or getattr(optimizer, "found_inf", None) is not None):
        return False
    calls = []
    for group in optimizer.param_groups:
        if (not group.get("fused") or group["amsgrad"] or group["capturable"]
                or group["differentiable"] or group.get("decoupled_weight_decay", False)):
            return False
        lists: tuple[list, ...] = ([], [], [], [], [])
        for p in group["params"]:
            if p.grad is None:
                continue
            state = optimizer.state.get(p)
            if not state or p.grad.is_sparse or p.grad.dtype != p.dtype or p.grad.device != p.device:
                return False
            for out, t in zip(lists, (p, p.grad, state["exp_avg"], state["exp_avg_sq"], state["step"])):
                out.append(t)
        calls.append((group, lists))
    with torch.no_grad():
        for group, (params, grads, avgs, sqs, steps) in calls:
            if not params:
                continue
            beta1, beta2 = group["betas"]
            torch._foreach_add_(steps, 1)
            fused_adam(params, grads, avgs, sqs, [], steps, amsgrad=False, lr=group["lr"],
                       beta1=float(beta1), beta2=float(beta2), weight_decay=group["weight_decay"],
                       eps=group["eps"], maximize=group["maximize"], grad_scale=None,
                       found_inf=None)
    return True


def make_scheduler(optimizer, cfg):
    """The per-epoch learning-rate schedule, or None. With ``lr_decay_start = S`` the first S
    epochs run at the full rate and the schedule then starts, as if from epoch 0: cosine
    falls to zero over the remaining epochs, exponential multiplies by ``lr_gamma`` per epoch."""
    t = cfg.train
    start = t.lr_decay_start
    if t.lr_schedule == "none":
        return None
    if start == 0:  # torch's own schedulers, as runs started before lr_decay_start existed
        if t.lr_schedule == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=t.epochs)
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=t.lr_gamma)
    span = t.epochs - start
    if span <= 0:
        log.info("train.lr_decay_start (%d) is not below train.epochs (%d): the learning rate "
                 "stays at %g", start, t.epochs, t.lr)
        return None
    if t.lr_schedule == "cosine":
        def factor(epoch: int) -> float:
            return 0.5 * (1.0 + math.cos(math.pi * min(max(epoch - start, 0), span) / span))
    else:
        def factor(epoch: int) -> float:
            return t.lr_gamma ** max(epoch - start, 0)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def make_ema(model: nn.Module, decay: float):
    """torch's AveragedModel keeping w_avg <- decay w_avg + (1 - decay) w (None when 0)."""
    if not decay:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay))
    return ema.eval().requires_grad_(False)


def make_grad_scaler(device: torch.device):
    """The loss scaler of fp16 training: ``torch.amp.GradScaler`` (torch >= 2.3, any device
    type), else the CUDA-only ``torch.cuda.amp.GradScaler`` of older torch."""
    amp_scaler = getattr(torch.amp, "GradScaler", None)
    if amp_scaler is not None:
        return amp_scaler(device.type)
    if device.type != "cuda":
        raise VaekitError(f"fp16 on {device.type} needs torch >= 2.3 (this is {torch.__version__}); "
                          "use --set train.precision=\"bf16\"")
    return torch.cuda.amp.GradScaler()


def beta_at(step: int, steps_per_epoch: int, cfg) -> float:
    """KL weight: linear warm-up from 0 to beta over ``warmup_epochs`` epochs of steps."""
    warm = cfg.train.warmup_epochs * steps_per_epoch
    if warm <= 0:
        return cfg.train.beta
    return cfg.train.beta * min(1.0, (step + 1) / warm)


def autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_check(params, clip: float) -> torch.Tensor:
    """With clip > 0, the gradients' global norm, clipped; without, the sum of all their
    elements, at half the cost of the norms: non-finite whenever a gradient is (and when
    finite gradients sum past float32's 3e38, diverged by any measure)."""
    if clip > 0:
        return torch.nn.utils.clip_grad_norm_(params, clip)
    return torch.stack([p.grad.sum() for p in params if p.grad is not None]).sum()


def normalize_grads(params) -> None:
    """Each gradient divided by its L2 norm (+1e-7), in place (train.grad_normalize)."""
    grads = [p.grad for p in params if p.grad is not None]
    if grads:
        torch._foreach_div_(grads, torch._foreach_add(torch._foreach_norm(grads), 1e-7))
