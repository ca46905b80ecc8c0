"""Held-out evaluation: the one place the reported numbers are computed.

:func:`evaluate` returns, as per-example means in nats:

- ``elbo``, ``reconstruction`` (E_q log p(x|z)) and ``kl``, from the same K posterior
  samples used for log p(x) (closed-form KL where it exists);
- ``log_px``: the importance-sampled estimate log 1/K sum_k p(x, z_k)/q(z_k|x) (Burda et
  al. 2016), with its standard error over examples; ``nll = -log_px``;
- ``gap = log_px - elbo``: how far the bound sits below the likelihood;
- ``active_units``: latent units u with Cov_x(E_q[z_u]) > 0.01 (Burda et al. 2016).

Likelihoods include the data transform's log-Jacobian, so they are in the units of the raw
data. Everything runs under ``torch.no_grad()`` and ``model.eval()``, batched over data and
chunked over samples (see :func:`vaekit.objectives.importance_sampled`), with its own seed.
"""

from __future__ import annotations

import math
import time

import torch

from .objectives import importance_sampled

ACTIVE_THRESHOLD = 0.01


def decoder_floats_per_sample(model) -> int:
    """Floats the decoder and likelihood hold per latent sample: every module's output,
    plus three copies of the likelihood's parameters for log_prob's temporaries."""
    sizes: list[int] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: sizes.append(out.numel()))
             for m in model.decoder.modules() if len(list(m.children())) == 0]
    try:
        with torch.no_grad():
            device = next(model.parameters()).device
            out = model.decoder(torch.zeros(1, model.latent_dim, device=device))
    finally:
        for h in hooks:
            h.remove()
    return int(sum(sizes) + 3 * out.numel())


def plan_chunks(model, n: int, samples: int, chunk_mib: int) -> tuple[int, int]:
    """(data batch B, samples per chunk k) so that B * k * floats * 4 bytes <= chunk_mib."""
    per_sample = 4 * decoder_floats_per_sample(model)
    rows = max(1, (chunk_mib * 2**20) // per_sample)  # latent samples decoded at once
    batch = max(1, min(n, 256, rows))
    chunk = max(1, min(samples, rows // batch))
    return batch, chunk


@torch.no_grad()
def evaluate(model, x: torch.Tensor, importance_samples: int = 1000, *, chunk_mib: int = 256,
             seed: int = 1234, log_abs_det_jacobian: float = 0.0,
             device: torch.device | str | None = None) -> dict:
    """All held-out numbers for ``x`` (model-space tensor ``(N, *x_shape)``) as one dict."""
    if importance_samples < 1:
        raise ValueError(f"importance_samples must be at least 1, got {importance_samples}")
    if len(x) == 0:
        raise ValueError("cannot evaluate on an empty test set")
    start = time.perf_counter()
    was_training = model.training
    model.eval()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    batch, chunk = plan_chunks(model, len(x), importance_samples, chunk_mib)
    log_px, recon, kl, means = [], [], [], []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for i in range(0, len(x), batch):
            xb = x[i:i + batch].to(device)
            est = importance_sampled(model, xb, importance_samples, chunk)
            log_px.append(est.log_px.double().cpu())
            recon.append(est.reconstruction.double().cpu())
            kl.append(est.kl.double().cpu())
            means.append(model.encode(xb).mean.double().cpu())
    model.train(was_training)
    log_px_t, recon_t, kl_t = torch.cat(log_px), torch.cat(recon), torch.cat(kl)
    codes = torch.cat(means)  # (N, L)
    unit_var = codes.var(0, unbiased=True) if len(codes) > 1 else torch.zeros(codes.shape[1])
    jac = float(log_abs_det_jacobian)
    elbo = float((recon_t - kl_t).mean()) + jac
    lp = float(log_px_t.mean()) + jac
    n = len(x)
    stderr = float(log_px_t.std(unbiased=True) / math.sqrt(n)) if n > 1 else float("nan")
    return {
        "elbo": elbo,
        "reconstruction": float(recon_t.mean()) + jac,
        "kl": float(kl_t.mean()),
        "log_px": lp,
        "log_px_stderr": stderr,
        "nll": -lp,
        "importance_samples": int(importance_samples),
        "gap": lp - elbo,
        "active_units": int((unit_var > ACTIVE_THRESHOLD).sum()),
        "latent_dim": int(codes.shape[1]),
        "unit_variances": [round(float(v), 6) for v in unit_var],
        "n_test": n,
        "log_abs_det_jacobian": jac,
        "seconds": round(time.perf_counter() - start, 3),
    }
