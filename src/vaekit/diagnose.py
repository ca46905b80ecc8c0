"""What a VAE gets wrong, measured for any run: posterior collapse, inference gaps, prior
holes, blur, and out-of-distribution likelihoods (``vaekit diagnose``, ``vaekit score``).

- **Collapse.** KL per latent unit (closed form against a factorised prior; against a
  mixture or VampPrior, the unit's own marginal of the mixture, by Monte Carlo; level by
  level for a hierarchy, given the level above), and the ELBO surgery of Hoffman & Johnson
  (2016): E_x KL(q(z|x) || p(z)) = I_q(x; z) + KL(q(z) || p(z)), q(z) = 1/N sum_n q(z|x_n)
  the aggregate posterior of N test examples. Estimated with S draws z ~ q(z|x_m) per
  example and log q(z) = logsumexp_n log q(z|x_n) - log N over the same N examples: each
  term log q(z|x_m) - log q(z) is at most log N, so the estimate of I_q never exceeds log N;
  it is the mutual information of the empirical mixture, which underestimates that of the
  data distribution when I_q approaches log N (then use more examples).
- **Inference gaps** (Cremer et al. 2018). For each of N examples a diagonal Gaussian
  q*(z|x) over the whole latent vector is optimised by Adam on its own ELBO (16 draws a
  step), started at the encoder's mean and spread. Stopping rule: every 50 steps the ELBO
  is measured with fixed noise (64 draws); optimisation stops when it rose by less than
  ``tol`` nats per example since the last measurement, or after ``steps`` steps. Then, with
  fresh draws: ELBO(q_phi), ELBO(q*), and log p(x) by importance sampling from the mixture
  of both proposals (balance heuristic: an unbiased estimate of p(x), never worse than
  either proposal alone). amortization = ELBO(q*) - ELBO(q_phi), approximation = log p(x) -
  ELBO(q*); they add up, example by example, to gap = log p(x) - ELBO(q_phi).
- **Prior holes.** The marginal KL above, and the prior mass where q(z) is low: the share of
  draws z ~ p(z) whose log q(z) is below the 1st percentile of log q(z) at draws from q(z)
  itself (1% when q(z) = p(z)). Samples decoded from the prior and from the ex-post mixture
  (``--sampler gmm``) are scored by a 5-NN classifier trained on real data: how sure it is
  of its answer (mean share of the winning class among the neighbours).
- **Blur.** Mean gradient magnitude of images (raw units) for the data, the
  reconstructions (means), and prior samples (means and draws).
- **Out of distribution.** Per example log p(x), bits per dimension, and the input-
  complexity score of Serra et al. (2020), S(x) = -log p(x) - L(x), L(x) the length of x
  under a generic lossless compressor (PNG for images, zlib otherwise) in nats: higher S
  means more likely out of distribution. AUROC by scikit-learn's ``roc_auc_score``.

Everything runs under ``no_grad`` in batches except the per-example optimisation, which is
batched over examples; no file of the run is written except ``diagnose.json`` and the report.
"""

from __future__ import annotations

import io
import logging
import math
import zlib

import numpy as np
import torch

from .devices import model_device
from .distributions import DiagonalNormal
from .explore import BATCH
from .objectives import log_weights
from .priors import DiagonalGaussianMixture

log = logging.getLogger(__name__)

#: elements of one (draws, B, K, L) block of the per-unit KL against a mixture (64 MiB of float32)
UNIT_KL_ELEMENTS = 2**24


def _conditioned(model, labels, lo: int, hi: int):
    if model.conditional:
        return model.given(labels[lo:hi].to(model_device(model)))
    return model


def _se(v: torch.Tensor) -> float:
    v = v.double()
    return float(v.std() / math.sqrt(len(v))) if len(v) > 1 else float("nan")


# ------------------------------------------------------------------------ collapse


def _unit_kl(q: DiagonalNormal, p, samples: int, gen: torch.Generator) -> torch.Tensor:
    """KL(q(z_u|x) || p(z_u)) per unit u: (B, L). Closed form for a diagonal Gaussian p;
    for a mixture of diagonal Gaussians, against each unit's 1-D marginal mixture, by Monte
    Carlo with ``samples`` draws."""
    mq, sq = q.mean, q.stddev
    if isinstance(p, DiagonalGaussianMixture):
        eps = torch.randn(samples, *mq.shape, generator=gen).to(mq)
        z = mq + sq * eps  # (S, B, L)
        log_q = torch.distributions.Normal(mq, sq).log_prob(z)
        loc, scale = p.component_loc, p.component_scale  # (K, L)
        log_w = torch.log_softmax(p.mixture_distribution.logits, -1)  # (K,)
        components = torch.distributions.Normal(loc, scale)
        # the draws against every component's marginal are (S, B, K, L): 64 draws of a batch
        # of 1,024 against a VampPrior's 500 components in 40 units are 5.2 GB per
        # intermediate, so they go a few draws at a time
        rows = max(1, UNIT_KL_ELEMENTS // max(1, z[0].numel() * len(loc)))
        log_p = torch.cat([torch.logsumexp(components.log_prob(zc.unsqueeze(-2)) + log_w[:, None], -2)
                           for zc in z.split(rows)])
        return (log_q - log_p).mean(0)
    # any prior that factorises over units: ask torch for the KL of the two families' units
    # (closed form where a formula is registered), else estimate it from the prior's density
    if not isinstance(p, torch.distributions.Independent):
        raise ValueError(f"KL per unit needs a prior that factorises over units or a mixture of "
                         f"such; this prior is a {type(p).__name__}")
    units_q, units_p = q.base_dist, p.base_dist
    try:
        return torch.distributions.kl_divergence(units_q, units_p).expand_as(mq)
    except NotImplementedError:
        z = mq + sq * torch.randn(samples, *mq.shape, generator=gen).to(mq)
        return (units_q.log_prob(z) - units_p.log_prob(z)).mean(0)


@torch.no_grad()
def kl_per_unit(model, x: torch.Tensor, labels=None, samples: int = 64, seed: int = 0) -> torch.Tensor:
    """E_x KL per latent unit, in the order of the latent vector (data up): (L,)."""
    gen = torch.Generator().manual_seed(seed)
    device = model_device(model)
    total = torch.zeros(model.latent_dim, dtype=torch.float64)
    for lo in range(0, len(x), BATCH):
        m = _conditioned(model, labels, lo, lo + BATCH)
        xb = x[lo:lo + BATCH].to(device)
        q, p = m.encode(xb), m.prior
        if not model.hierarchical:
            per = _unit_kl(q, p, samples, gen)
        else:  # each level given draws of the level above; the top against the prior
            eps = torch.randn(samples, len(xb), *model.noise_shape, generator=gen).to(device)
            parts = q.split(q.rsample_from(eps))
            per = [_unit_kl(q.conditional(l, parts[l + 1]), p.conditional(l, parts[l + 1]),
                            samples, gen).mean(0) for l in range(len(parts) - 1)]
            per = torch.cat(per + [_unit_kl(q.top, p.top, samples, gen)], -1)
        total += per.double().sum(0).cpu()
    return total / len(x)


@torch.no_grad()
def elbo_surgery(model, x: torch.Tensor, labels=None, samples: int = 4, seed: int = 0) -> dict:
    """E_x KL(q(z|x)||p(z)) = I_q(x; z) + KL(q(z)||p(z)) over the N examples of x (see the
    module). Returns the three estimates with standard errors and log N."""
    gen = torch.Generator().manual_seed(seed)
    device = model_device(model)
    n = len(x)
    eps = torch.randn(samples, n, *model.noise_shape, generator=gen)
    zs, log_q_own, log_p = [], [], []
    for lo in range(0, n, BATCH):
        m = _conditioned(model, labels, lo, lo + BATCH)
        q = m.encode(x[lo:lo + BATCH].to(device))
        z = q.rsample_from(eps[:, lo:lo + BATCH].to(device))  # (S, b, L)
        zs.append(z)
        log_q_own.append(q.log_prob(z))
        log_p.append(m.prior.log_prob(z))
    z = torch.cat(zs, 1).reshape(samples * n, -1)  # every draw, against every example
    log_q_own = torch.cat(log_q_own, 1).reshape(-1).double()
    log_p = torch.cat(log_p, 1).reshape(-1).double()
    log_agg = _log_aggregate(model, x, labels, z) - math.log(n)
    per_draw_mi = (log_q_own - log_agg).reshape(samples, n).mean(0)
    per_draw_marg = (log_agg - log_p).reshape(samples, n).mean(0)
    per_draw_kl = (log_q_own - log_p).reshape(samples, n).mean(0)
    return {"mutual_information": float(per_draw_mi.mean()), "mutual_information_se": _se(per_draw_mi),
            "marginal_kl": float(per_draw_marg.mean()), "marginal_kl_se": _se(per_draw_marg),
            "average_kl": float(per_draw_kl.mean()), "average_kl_se": _se(per_draw_kl),
            "log_n": math.log(n), "surgery_examples": n, "surgery_samples": samples,
            "_log_aggregate": (z, log_agg)}


def _log_aggregate(model, x, labels, z: torch.Tensor) -> torch.Tensor:
    """logsumexp_n log q(z_m|x_n) for every z_m: (M,), q over the N examples of x."""
    device = model_device(model)
    running = torch.full((len(z),), -math.inf, dtype=torch.float64)
    rows = max(1, 2**22 // (min(BATCH, len(x)) * model.latent_dim))  # z rows per pass
    for lo in range(0, len(x), BATCH):
        m = _conditioned(model, labels, lo, lo + BATCH)
        q = m.encode(x[lo:lo + BATCH].to(device))
        for i in range(0, len(z), rows):
            zc = z[i:i + rows].to(device)[:, None]  # (r, 1, L) against b examples
            lp = torch.logsumexp(q.log_prob(zc).double(), 1).cpu()  # (r,)
            running[i:i + rows] = torch.logaddexp(running[i:i + rows], lp)
    return running


# ------------------------------------------------------------------- inference gaps


def _elbo_of(model, x, loc, log_scale, eps) -> torch.Tensor:
    """ELBO of q = N(loc, diag exp(log_scale)^2) per example, from draws eps (S, B, L)."""
    q = DiagonalNormal(loc, log_scale.exp())
    return _elbo_phi(model, x, q, eps)


def inference_gaps(model, x: torch.Tensor, labels=None, *, steps: int = 1000, lr: float = 0.01,
                   tol: float = 0.01, samples: int = 1000, seed: int = 0, progress=None) -> dict:
    """The amortization and approximation gaps (Cremer et al. 2018) of N examples, with
    standard errors over them (see the module for the procedure and stopping rule)."""
    gen = torch.Generator().manual_seed(seed)
    device = model_device(model)
    model.eval()
    trainable = [p for p in model.parameters() if p.requires_grad]
    for p in trainable:  # gradients for q*'s parameters only
        p.requires_grad_(False)
    try:
        return _inference_gaps(model, x, labels, steps, lr, tol, samples, gen, device, progress)
    finally:
        for p in trainable:
            p.requires_grad_(True)


def _inference_gaps(model, x, labels, steps, lr, tol, samples, gen, device, progress) -> dict:
    out = {k: [] for k in ("elbo", "elbo_star", "log_px", "iterations")}
    for lo in range(0, len(x), 256):
        m = _conditioned(model, labels, lo, lo + 256)
        xb = x[lo:lo + 256].to(device)
        b = len(xb)
        with torch.no_grad():
            q = m.encode(xb)
            draws = q.rsample_from(torch.randn(64, b, *model.noise_shape, generator=gen).to(device))
            loc0 = q.mean if isinstance(q, DiagonalNormal) else draws.mean(0)
            scale0 = q.stddev if isinstance(q, DiagonalNormal) else draws.std(0).clamp_min(1e-3)
        loc = loc0.detach().clone().requires_grad_(True)
        log_scale = scale0.detach().log().clone().requires_grad_(True)
        opt = torch.optim.Adam([loc, log_scale], lr=lr)
        fixed = torch.randn(64, b, *model.noise_shape, generator=gen).to(device)
        with torch.no_grad():
            last = float(_elbo_of(m, xb, loc, log_scale, fixed).mean())
        done = steps
        for step in range(1, steps + 1):
            eps = torch.randn(16, b, *model.noise_shape, generator=gen).to(device)
            loss = -_elbo_of(m, xb, loc, log_scale, eps).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step % 50 == 0:
                with torch.no_grad():
                    now = float(_elbo_of(m, xb, loc, log_scale, fixed).mean())
                if now - last < tol:
                    done = step
                    break
                last = now
        with torch.no_grad():
            e = torch.randn(samples, b, *model.noise_shape, generator=gen).to(device)
            elbo_phi = _chunked_mean(lambda s: _elbo_phi(m, xb, q, e[s]), samples)
            elbo_star = _chunked_mean(lambda s: _elbo_of(m, xb, loc, log_scale, e[s]), samples)
            log_px = _mixture_log_px(m, xb, q, loc, log_scale, samples, gen)
        out["elbo"].append(elbo_phi.cpu())
        out["elbo_star"].append(elbo_star.cpu())
        out["log_px"].append(log_px.cpu())
        out["iterations"].append(done)
        if progress is not None:
            progress(min(lo + 256, len(x)))
    elbo = torch.cat(out["elbo"]).double()
    star = torch.cat(out["elbo_star"]).double()
    lpx = torch.cat(out["log_px"]).double()
    amort, approx, gap = star - elbo, lpx - star, lpx - elbo
    return {"amortization_gap": float(amort.mean()), "amortization_gap_se": _se(amort),
            "approximation_gap": float(approx.mean()), "approximation_gap_se": _se(approx),
            "gap": float(gap.mean()), "gap_se": _se(gap), "elbo": float(elbo.mean()),
            "elbo_optimised": float(star.mean()), "log_px": float(lpx.mean()),
            "optimisation_steps": out["iterations"], "examples": len(x)}


def _chunked_mean(fn, samples: int, chunk: int = 100) -> torch.Tensor:
    parts = [fn(slice(i, min(i + chunk, samples))) * min(chunk, samples - i)
             for i in range(0, samples, chunk)]
    return torch.stack(parts).sum(0) / samples


def _elbo_phi(model, x, q, eps) -> torch.Tensor:
    """The ELBO of q per example: the mean of log w over draws z = q.rsample_from(eps)."""
    log_w, _ = log_weights(model, x, q, model.prior, q.rsample_from(eps))
    return log_w.mean(0)


def _mixture_log_px(model, x, q, loc, log_scale, samples: int, gen) -> torch.Tensor:
    """log p(x) by importance sampling from 1/2 q_phi + 1/2 q*: samples/2 draws of each."""
    device = x.device
    half = max(1, samples // 2)
    star = torch.distributions.Independent(torch.distributions.Normal(loc, log_scale.exp()), 1)
    running = torch.full((len(x),), -math.inf, dtype=torch.float64, device=device)
    for which in ("phi", "star"):
        for i in range(0, half, 100):
            k = min(100, half - i)
            e = torch.randn(k, len(x), *model.noise_shape, generator=gen).to(device)
            z = q.rsample_from(e) if which == "phi" else loc + log_scale.exp() * e
            log_prop = torch.logaddexp(q.log_prob(z), star.log_prob(z)) - math.log(2)
            log_w = (model.decode(z).log_prob(x) + model.prior.log_prob(z) - log_prop).double()
            running = torch.logaddexp(running, torch.logsumexp(log_w, 0))
    return running - math.log(2 * half)


# -------------------------------------------------------------------- prior holes


@torch.no_grad()
def prior_hole_mass(model, x, labels, aggregate: tuple, draws: int = 2000, seed: int = 0) -> float:
    """The share of z ~ p(z) where log q(z) is below the 1st percentile of log q(z) at draws
    from q(z) itself."""
    z_q, log_q_at_q = aggregate
    from .explore import prior_sample

    z_p = prior_sample(model, draws, seed)
    log_q_at_p = _log_aggregate(model, x, labels, z_p) - math.log(len(x))
    threshold = torch.quantile(log_q_at_q.float(), 0.01)
    return float((log_q_at_p < threshold).float().mean())


def judge_confidence(judge, samples: torch.Tensor) -> float:
    """How sure a classifier of real data is about generated samples: the mean share of
    the winning class among its neighbours (1 = every neighbour agrees)."""
    flat = samples.reshape(len(samples), -1).cpu().numpy()
    return float(judge.predict_proba(flat).max(1).mean())


# --------------------------------------------------------------------------- blur


def sharpness(images: torch.Tensor) -> float | None:
    """Mean gradient magnitude sqrt(dx^2 + dy^2) of images (..., H, W), forward differences."""
    if images.dim() < 3:
        return None
    im = images.double()
    dx = im[..., :, 1:] - im[..., :, :-1]
    dy = im[..., 1:, :] - im[..., :-1, :]
    return float(torch.sqrt(dx[..., :-1, :] ** 2 + dy[..., :, :-1] ** 2).mean())


# ---------------------------------------------------------------------------- OOD


def compressed_nats(x_raw: np.ndarray, image: bool) -> np.ndarray:
    """L(x) in nats per example: the PNG size of an image (8-bit grey or colour, values in
    [0, 1] scaled to 0..255), else the zlib size of the float32 values."""
    from PIL import Image

    out = np.empty(len(x_raw))
    for i, example in enumerate(x_raw):
        if image:
            arr = np.clip(np.rint(np.asarray(example) * 255), 0, 255).astype(np.uint8)
            arr = arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, format="PNG", optimize=True)
            size = len(buf.getvalue())
        else:
            size = len(zlib.compress(np.asarray(example, dtype=np.float32).tobytes(), 9))
        out[i] = 8 * size * math.log(2)
    return out


def scores(model, x: torch.Tensor, labels=None, importance_samples: int = 100, seed: int = 0,
           progress=None) -> dict[str, np.ndarray]:
    """Per example: log p(x) (in the data's own units), bits per dimension, ood_score."""
    from .evaluation import auto_chunk_mib, importance_batches, plan_chunks
    from .explore import to_raw

    spec = model.data_spec
    device = model_device(model)
    gen = torch.Generator().manual_seed(seed)
    batch, chunk = plan_chunks(model, x, importance_samples, auto_chunk_mib(device), labels=labels)
    log_px = []
    for lo, _, _, est in importance_batches(model, x, importance_samples, batch, chunk, gen,
                                            labels=labels, device=device):
        log_px.append(est.log_px.double().cpu())
        if progress is not None:
            progress(min(lo + batch, len(x)))
    lp = torch.cat(log_px).numpy() + spec.log_abs_det_jacobian
    dims = int(np.prod(spec.shape))
    length = compressed_nats(to_raw(model, x).numpy(), bool(spec.image))
    return {"log_px": lp, "bits_per_dim": -lp / (dims * math.log(2)), "ood_score": -lp - length,
            "compressed_nats": length}


def auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    """Area under the ROC curve for telling ``outside`` (positive) from ``inside`` by a score
    where higher means more likely outside (scikit-learn's roc_auc_score)."""
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.zeros(len(inside)), np.ones(len(outside))]
    return float(roc_auc_score(y, np.r_[inside, outside]))


# ------------------------------------------------------------------ whole runs

DIAGNOSE = "diagnose.json"


def _shuffled(x: torch.Tensor, labels, seed: int):
    """``x`` and its labels in one random order of this seed."""
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    return x[order], (labels[order] if labels is not None else None)


def diagnose_run(run_dir, *, examples: int = 200, ood: str | None = None,
                 data_dir: str | None = None, importance_samples: int = 1000,
                 ood_samples: int = 100, seed: int = 0, steps: int = 1000,
                 progress: bool = False) -> dict:
    """Every measurement of the module on a run's test set: collapse and ELBO surgery (on
    up to 10,000 test examples; 500 for a hierarchy, whose q(z|x_n) must be evaluated by its
    networks at every draw), inference gaps (on ``examples`` drawn at random), prior holes, blur, and with
    ``ood`` the AUROCs against other data. Writes ``RUN/diagnose.json`` and the figures
    ``RUN/figures/diagnose_*.png`` only once everything is computed."""
    from pathlib import Path

    from .checkpoint import atomic_write_bytes, atomic_write_text
    from .data import dataset_for_spec
    from .errors import VaekitError
    from .explore import user_inputs
    from .rundir import load_run

    if examples < 1:
        raise VaekitError(f"--examples must be at least 1, got {examples}")
    if importance_samples < 1 or ood_samples < 1:
        raise VaekitError("the numbers of importance samples must be at least 1")
    run_dir = Path(run_dir)
    model = load_run(run_dir)
    spec = model.data_spec
    data = dataset_for_spec(spec, data_dir)
    # the subsets below (surgery, gaps, out-of-distribution) are drawn at random, not the
    # first N: a test file is not always in random order (MNIST's first 5,000 test digits
    # are the cleaner, easier half), and the first N would say little about the rest
    x, y = _shuffled(data.test, data.test_labels, seed)
    if len(x) < 2:
        raise VaekitError(f"{run_dir} has {len(x)} test examples; diagnosing needs at least two "
                          "(train with data.test_fraction > 0)")
    other = user_inputs(model, ood, data_dir) if ood else None  # refused before any work
    bar = _bar(progress)
    out: dict = {"run": str(run_dir), "test_examples": len(x)}
    out.update(_collapse(model, x, y, seed))
    cap = 500 if model.hierarchical else 10_000
    ns = min(len(x), cap)
    surgery = elbo_surgery(model, x[:ns], y[:ns] if y is not None else None, seed=seed)
    aggregate = surgery.pop("_log_aggregate")
    out.update(surgery)
    # inference gaps
    n = min(examples, len(x))
    yn = y[:n] if y is not None else None
    bar.start(n, "inference gaps (per-example optimisation)")
    gaps = inference_gaps(model, x[:n], yn, steps=steps, samples=importance_samples, seed=seed,
                          progress=bar.to)
    for key in ("elbo", "elbo_optimised", "log_px"):  # in the data's own units, as evaluate's
        gaps[key] += spec.log_abs_det_jacobian
    out.update(gaps)
    bar.close()
    out["examples"] = n
    # prior holes
    out["prior_hole_mass"] = prior_hole_mass(model, x[:ns], y[:ns] if y is not None else None,
                                             aggregate, seed=seed)
    figures = {}
    if spec.image:
        figures.update(_prior_and_blur(model, data, x, y, seed, data_dir, out))
    if other is not None:
        figures["diagnose_ood"] = _out_of_distribution(model, x, y, other, ood, ood_samples, seed,
                                                       out)
    for name, png in figures.items():
        atomic_write_bytes(run_dir / "figures" / f"{name}.png", png)
    atomic_write_text(run_dir / DIAGNOSE, __import__("json").dumps(out, indent=1))
    return out


def _collapse(model, x, y, seed: int) -> dict:
    """Each latent unit's KL and whether it is active; per level for a hierarchy."""
    from .evaluation import ACTIVE_THRESHOLD
    from .explore import encode

    per_unit = kl_per_unit(model, x, y, seed=seed)
    active = encode(model, x, labels=y).double().var(0) > ACTIVE_THRESHOLD
    out = {"kl_per_unit": [round(float(v), 6) for v in per_unit], "active_units": int(active.sum())}
    if model.hierarchical:
        out["levels"] = [{"level": i + 1, "size": len(k), "kl_per_unit_sum": float(k.sum()),
                          "active_units": int(a.sum())}
                         for i, (k, a) in enumerate(zip(per_unit.split(model.levels),
                                                        active.split(model.levels)))]
    return out


def _prior_and_blur(model, data, x, y, seed: int, data_dir, out: dict) -> dict[str, bytes]:
    """Prior samples against samples from a mixture fitted to the codes (how a real-data
    classifier judges each), and the sharpness of data, reconstructions and samples: adds
    them to ``out``, returns the two figures."""
    from .evaluation import real_data_classifier
    from .explore import reconstruct, sample, to_raw

    prior_x, _ = sample(model, 64, "prior", seed=seed)
    prior_draws, _ = sample(model, 64, "prior", seed=seed, draw=True)
    gmm_x = None
    if not model.conditional:
        gmm_x, _ = sample(model, 64, "gmm", seed=seed, data_dir=data_dir)
    if y is not None and not y.is_floating_point():
        judge = real_data_classifier(to_raw(model, data.train), data.train_labels)
        out["judge_confidence_prior"] = judge_confidence(judge, prior_x)
        if gmm_x is not None:
            out["judge_confidence_gmm"] = judge_confidence(judge, gmm_x)
    recon = to_raw(model, reconstruct(model, x[:64], labels=y[:64] if y is not None else None))
    out["sharpness"] = {"data": sharpness(to_raw(model, x[:500])), "reconstructions": sharpness(recon),
                        "prior_means": sharpness(prior_x), "prior_draws": sharpness(prior_draws)}
    return {"diagnose_prior_vs_gmm": _pictures(prior_x, gmm_x),
            "diagnose_blur": _blur_picture(to_raw(model, x[:16]), recon[:16], prior_x[:16],
                                           prior_draws[:16])}


def _out_of_distribution(model, x, y, other, name: str, samples: int, seed: int,
                         out: dict) -> bytes:
    """log p(x) and the OOD score on the test data against ``other``'s: their AUROCs added
    to ``out``; returns the figure."""
    m = min(len(x), len(other.x), 2000)
    ox, oy = _shuffled(other.x, other.labels, seed)
    own = scores(model, x[:m], y[:m] if y is not None else None, samples, seed)
    theirs = scores(model, ox[:m], oy[:m] if oy is not None else None, samples, seed)
    out["ood"] = {"data": name, "examples": m, "importance_samples": samples,
                  "log_px_test": float(own["log_px"].mean()),
                  "log_px_other": float(theirs["log_px"].mean())}
    out["auroc_log_px"] = auroc(-own["log_px"], -theirs["log_px"])
    out["auroc_ood_score"] = auroc(own["ood_score"], theirs["ood_score"])
    return _ood_picture(own, theirs, model.data_spec.name, name)


class _bar:
    """A progress bar on a terminal (tqdm), or nothing."""

    def __init__(self, on: bool):
        self.on, self.bar, self.done = on, None, 0

    def start(self, total: int, what: str):
        if self.on:
            from tqdm.auto import tqdm

            log.info("diagnosing: %s on %d examples", what, total)
            self.bar = tqdm(total=total, desc="diagnose", unit="example", leave=False, disable=None)

    def to(self, done: int):
        if self.bar is not None:
            self.bar.update(done - self.done)
        self.done = done

    def close(self):
        if self.bar is not None:
            self.bar.close()
        self.bar, self.done = None, 0


def _pictures(prior_x, gmm_x) -> bytes:
    from . import plots

    rows = [np.clip(prior_x[:16].numpy(), 0, 1)]
    names = ["prior p(z)"]
    if gmm_x is not None:
        rows.append(np.clip(gmm_x[:16].numpy(), 0, 1))
        names.append("ex-post mixture")
    return plots.png_bytes(plots.samples_per_class(rows, names, "decoded samples: z from the "
                                                                "prior, and from the ex-post mixture"))


def _blur_picture(data, recon, means, draws) -> bytes:
    from . import plots

    rows = [np.clip(t.numpy(), 0, 1) for t in (data, recon, means, draws)]
    return plots.png_bytes(plots.samples_per_class(
        rows, ["data", "reconstructions", "sample means", "sample draws"],
        "blur: the decoder's means against data and draws"))


def _ood_picture(own: dict, theirs: dict, name: str, other: str) -> bytes:
    from . import plots

    fig, axes = plots.subplots(1, 2, figsize=(11, 4))
    for ax, key, title in ((axes[0], "log_px", "log p(x) (nats)"),
                           (axes[1], "ood_score", "S(x) = -log p(x) - L(x) (higher: more out)")):
        ax.hist(own[key], bins=40, alpha=0.6, label=f"{name} (test)")
        ax.hist(theirs[key], bins=40, alpha=0.6, label=other)
        ax.set_title(title)
        ax.legend()
    return plots.png_bytes(fig)
