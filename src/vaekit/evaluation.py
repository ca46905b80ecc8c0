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
A long evaluation can keep its progress in a file (``resume_file``) and continue from it
after an interruption, ending with the numbers an uninterrupted one gives.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from . import checkpoint as ckpt
from .errors import CheckpointError, WriteError
from .objectives import importance_sampled

log = logging.getLogger(__name__)

ACTIVE_THRESHOLD = 0.01


class _FreshBytes(TorchDispatchMode):
    """Counts the bytes of every new tensor an operation returns; views and in-place
    results (which share an input's storage) are not new memory and are not counted."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        held = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs))
                if isinstance(t, torch.Tensor)}
        fresh = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tree_leaves(out)
                 if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in held}
        self.total += sum(fresh.values())
        return out


def bytes_per_sample(model, example: torch.Tensor, labels: torch.Tensor | None = None) -> int:
    """Memory one latent sample takes in a chunk of :func:`importance_sampled`: the bytes of
    every tensor the whole log-weight computation creates for it (the decoder and the
    likelihood, the prior's density, such as a VampPrior's float64 (samples x components)
    matrix, the posterior's, a hierarchy's level networks), summed as if none were freed, so
    an upper bound on what a chunk holds at once. Measured on one example at two chunk sizes;
    the difference per sample leaves out what does not grow with the samples (encoding x, a
    VampPrior's pseudo-inputs)."""
    device = next(model.parameters()).device
    m = model.given(labels[:1].to(device)) if labels is not None else model
    x1 = example[:1].to(device)
    totals = []
    with torch.no_grad():
        for k in (4, 8):
            with _FreshBytes() as meter:
                importance_sampled(m, x1, k, k, generator=torch.Generator().manual_seed(0))
            totals.append(meter.total)
    return max(1, (totals[1] - totals[0]) // 4)


def auto_chunk_mib(device: torch.device) -> int:
    """The memory one chunk of importance samples may use: a quarter of what a CUDA device
    has free, 512 MiB on MPS, 128 MiB on a CPU (which shares its memory with everything else;
    on one thread 128 evaluated up to a fifth faster than 256, and 64 or 32 no faster overall:
    benchmarks/memory.py, RESULTS.md)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return max(256, free // 4 // 2**20)
    return 512 if device.type == "mps" else 128


def plan_chunks(model, x: torch.Tensor, samples: int, chunk_mib: int,
                labels: torch.Tensor | None = None) -> tuple[int, int]:
    """(data batch B, samples per chunk k) for estimating log p(x) on ``x`` so that
    B * k * :func:`bytes_per_sample` <= chunk_mib (in MiB)."""
    rows = max(1, (chunk_mib * 2**20) // bytes_per_sample(model, x, labels))  # samples at once
    batch = max(1, min(len(x), 256, rows))
    chunk = max(1, min(samples, rows // batch))
    return batch, chunk


def fingerprint(model, *tensors: torch.Tensor | None) -> str:
    """sha256 of a model's weights and buffers (by name) and of the given tensors' bytes:
    equal exactly when an evaluation would see the same model and the same data."""
    h = hashlib.sha256()
    for name, t in [*sorted(model.state_dict().items()), *((str(i), t) for i, t in enumerate(tensors))]:
        if t is None:
            continue
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{t.dtype}:{t.numel()};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class _Progress:
    """An evaluation's partial results, kept in a file (a vaekit checkpoint, written
    atomically) after every batch of images: per-example values so far, the generator's
    state and the number of images done, under a key (model and data fingerprint, K, seed,
    batching). Run again after an interruption (Ctrl-C, a killed job), the evaluation loads
    them and goes on from the next batch; a file with another key, or unreadable, is ignored
    and replaced. The file is removed once the evaluation ends. Keeping it is best-effort:
    where it cannot be written, the evaluation goes on without it."""

    def __init__(self, path: str | Path | None, key: dict, began: float):
        self.path = Path(path) if path is not None else None
        self.key = key
        self.seconds = 0.0  # the wall time of the parts done before this call
        self.began = began  # time.perf_counter() when this call began

    def load(self, parts: dict[str, list], gen: torch.Generator) -> int:
        """Fill ``parts`` and ``gen`` from the file; the number of images it covers (0: none)."""
        if self.path is None:
            return 0
        ckpt.remove_stale_temporaries(self.path.parent)  # left by killed writes of this file
        if not self.path.exists():
            return 0
        try:
            tensors, meta = ckpt.load(self.path)
        except CheckpointError as e:
            log.warning("ignoring the evaluation progress file: %s", e)
            return 0
        if meta.get("kind") != "evaluation-progress" or meta.get("key") != self.key:
            log.info("%s holds the progress of another evaluation (other model, data, K, seed or "
                     "batching); starting afresh", self.path)
            return 0
        for name, values in parts.items():
            if name in tensors:
                values.append(tensors[name])
        gen.set_state(tensors["generator"])
        done, self.seconds = int(meta["done"]), float(meta["seconds"])
        log.info("resuming the evaluation at image %d of %d (from %s)", done, self.key["n"], self.path)
        return done

    def save(self, parts: dict[str, list], gen: torch.Generator, done: int) -> None:
        if self.path is None:
            return
        tensors = {name: torch.cat(values) for name, values in parts.items() if values}
        tensors["generator"] = gen.get_state()
        try:
            ckpt.save(self.path, tensors, {"kind": "evaluation-progress", "key": self.key,
                                           "done": done, "seconds": self.elapsed()})
        except WriteError as e:
            log.warning("cannot keep the evaluation's progress (%s); it goes on without", e)
            self.path = None

    def elapsed(self) -> float:
        """Wall time of the whole evaluation: its earlier parts and this one."""
        return self.seconds + time.perf_counter() - self.began

    def finish(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def importance_batches(model, x: torch.Tensor, importance_samples: int, batch: int, chunk: int,
                       generator: torch.Generator, *, labels: torch.Tensor | None = None,
                       device: torch.device | None = None, start: int = 0):
    """The one loop over examples of every importance-sampled log p(x) (``evaluate``,
    ``score``): yields ``(lo, xb, m, est)`` for each batch of ``batch`` examples from
    ``start``: the batch on the device, the model given its classes (a conditional model)
    and :func:`vaekit.objectives.importance_sampled` with ``chunk`` samples at a time, its
    noise drawn from ``generator`` in example order."""
    for lo in range(start, len(x), batch):
        xb = x[lo:lo + batch] if device is None else x[lo:lo + batch].to(device)
        m = model.given(labels[lo:lo + batch].to(xb.device)) if labels is not None else model
        with torch.no_grad():
            est = importance_sampled(m, xb, importance_samples, chunk, generator=generator)
        yield lo, xb, m, est


@torch.no_grad()
def evaluate(model, x: torch.Tensor, importance_samples: int = 1000, *, chunk_mib: int = 0,
             seed: int = 1234, log_abs_det_jacobian: float = 0.0,
             device: torch.device | str | None = None, progress: bool = False,
             labels: torch.Tensor | None = None, per_example: bool = False,
             resume_file: str | Path | None = None) -> dict:
    """All held-out numbers for ``x`` (model-space tensor ``(N, *x_shape)``) as one dict;
    a conditional model also takes each example's class (``labels``). ``per_example`` adds
    each example's log p(x) estimate, a float64 array under ``"log_px_per_example"`` (what
    two models' paired comparison on the same examples needs; not JSON).

    ``progress`` logs one line saying what is about to be computed and shows a progress bar
    over the test images where stderr is a terminal (K = 5000 on 10,000 images is minutes to
    tens of minutes on a CPU).

    ``resume_file``: where the evaluation keeps its progress after every batch of images
    (see :class:`_Progress`); called again with the same model, data, K, seed and chunking, it
    continues from there, with the numbers an uninterrupted evaluation gives (bit for bit
    with the same threads and device). The file is removed at the end."""
    if importance_samples < 1:
        raise ValueError(f"importance_samples must be at least 1, got {importance_samples}")
    if len(x) == 0:
        raise ValueError("cannot evaluate on an empty test set")
    if hasattr(model, "shaped"):  # flat vectors of the right size are accepted
        x = model.shaped(x)
    if model.conditional and labels is None:
        raise ValueError("this model is conditional: evaluation needs the examples' classes")
    start = time.perf_counter()
    was_training = model.training
    model.eval()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if chunk_mib <= 0:
        chunk_mib = auto_chunk_mib(device)
    batch, chunk = plan_chunks(model, x, importance_samples, chunk_mib, labels=labels)
    parts: dict[str, list[torch.Tensor]] = {
        "log_px": [], "reconstruction": [], "kl": [], "kl_levels": [], "means": []}
    # eps from a CPU generator of this seed, copied to the device: the same estimate for one
    # seed on any device (the same draws as torch's global CPU generator seeded alike)
    gen = torch.Generator().manual_seed(seed)
    keeper = _Progress(resume_file, {
        "n": len(x), "importance_samples": int(importance_samples), "seed": int(seed),
        "batch": batch, "chunk": chunk,
        "fingerprint": fingerprint(model, x, labels) if resume_file is not None else ""}, start)
    first = keeper.load(parts, gen)
    bar = None
    if progress:
        spec = getattr(model, "data_spec", None)
        nouns = spec.nouns if spec is not None else ("example", "examples")
        log.info("evaluating: log p(x) with K = %d importance samples on %d %s "
                 "(%d per batch, %d samples per chunk)", importance_samples, len(x), nouns[1],
                 batch, chunk)
        from tqdm.auto import tqdm

        bar = tqdm(total=len(x), initial=first, desc="evaluate", unit=nouns[0], leave=False,
                   disable=None, dynamic_ncols=True)
    for i, xb, m, est in importance_batches(model, x, importance_samples, batch, chunk, gen,
                                            labels=labels, device=device, start=first):
        parts["log_px"].append(est.log_px.cpu().double())  # float64 on the CPU (MPS has none)
        parts["reconstruction"].append(est.reconstruction.cpu().double())
        parts["kl"].append(est.kl.cpu().double())
        if est.kl_levels is not None:
            parts["kl_levels"].append(est.kl_levels.cpu().double())
        parts["means"].append(m.encode(xb).mean.cpu().double())
        keeper.save(parts, gen, i + len(xb))
        if bar is not None:
            bar.update(len(xb))
    if bar is not None:
        bar.close()
    keeper.finish()
    model.train(was_training)
    jac = float(log_abs_det_jacobian)
    result = _summary(model, parts, jac)
    return {
        **result,
        "importance_samples": int(importance_samples),
        "n_test": len(x),
        "log_abs_det_jacobian": jac,
        "seconds": round(keeper.elapsed(), 3),  # with the parts done before a resume
        "resumed_from": first,  # images an interrupted call had done (0: none)
        "threads": torch.get_num_threads(),
        "device": str(device),
        **({"log_px_per_example": (torch.cat(parts["log_px"]) + jac).numpy()} if per_example else {}),
    }


def _summary(model, parts: dict[str, list[torch.Tensor]], jac: float) -> dict:
    """The reported means (nats per example, with the data transform's log-Jacobian ``jac``)
    and active units, from the per-example values an evaluation gathered."""
    log_px_t, recon_t, kl_t = (torch.cat(parts[k]) for k in ("log_px", "reconstruction", "kl"))
    codes = torch.cat(parts["means"])  # (N, L)
    unit_var = codes.var(0, unbiased=True) if len(codes) > 1 else torch.zeros(codes.shape[1])
    elbo = float((recon_t - kl_t).mean()) + jac
    lp = float(log_px_t.mean()) + jac
    n = len(log_px_t)
    stderr = float(log_px_t.std(unbiased=True) / math.sqrt(n)) if n > 1 else float("nan")
    levels = []
    if parts["kl_levels"]:  # a hierarchy: KL and active units level by level, from the data up
        per_kl = torch.cat(parts["kl_levels"]).mean(0)
        for i, part in enumerate(unit_var.split(model.levels)):
            levels.append({"level": i + 1, "size": int(part.numel()), "kl": float(per_kl[i]),
                           "active_units": int((part > ACTIVE_THRESHOLD).sum())})
    return {
        "elbo": elbo,
        "reconstruction": float(recon_t.mean()) + jac,
        "kl": float(kl_t.mean()),
        "log_px": lp,
        "log_px_stderr": stderr,
        "nll": -lp,
        "gap": lp - elbo,
        "active_units": int((unit_var > ACTIVE_THRESHOLD).sum()),
        "latent_dim": int(codes.shape[1]),
        "unit_variances": [round(float(v), 6) for v in unit_var],
        **({"levels": levels} if levels else {}),
    }


def table_rows(ev: dict) -> list[tuple[str, str]]:
    """The evaluation as (quantity, value) rows: what ``train``, ``evaluate`` and the report
    print. The rows name the split evaluated (``evaluate --split valid``: validation)."""
    split = {"test": "test", "valid": "validation"}[ev.get("split", "test")]
    return [
        (f"{split} ELBO", f"{ev['elbo']:.3f}"),
        ("  reconstruction E_q log p(x|z)", f"{ev['reconstruction']:.3f}"),
        ("  KL(q(z|x) || p(z))", f"{ev['kl']:.3f}"),
        (f"log p(x) (K = {ev['importance_samples']})", f"{ev['log_px']:.3f} ± {ev['log_px_stderr']:.3f}"),
        ("gap log p(x) - ELBO", f"{ev['gap']:.3f}"),
        ("active units", f"{ev['active_units']} / {ev['latent_dim']}"),
        *[(f"  level {lv['level']} (z{lv['level']}): KL, active units",
           f"{lv['kl']:.3f}, {lv['active_units']} / {lv['size']}") for lv in ev.get("levels", [])],
        (f"{split} examples", f"{ev['n_test']}"),
    ]


def format_table(ev: dict) -> str:
    rows = table_rows(ev)
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows) + "\n(nats per example)"


# ----------------------------------------------------------- what the latent space shows


def latent_knn_accuracy(train_codes, train_labels, test_codes, test_labels, k: int = 5) -> float:
    """Accuracy of a k-nearest-neighbour classifier on latent codes: how well classes form
    separate regions (1.0: every test code sits among codes of its own class)."""
    from sklearn.neighbors import KNeighborsClassifier

    clf = KNeighborsClassifier(n_neighbors=min(k, len(train_codes)))
    clf.fit(_np(train_codes), _np(train_labels))
    return float((clf.predict(_np(test_codes)) == _np(test_labels)).mean())


def manifold_rank_correlation(codes, coordinate, train_codes=None, train_coordinate=None,
                              k: int = 5) -> dict:
    """Spearman rank correlations between latent codes and a known 1-D manifold coordinate
    t (the swiss roll's position along the roll); 1.0 means the codes order the examples
    exactly as t does.

    - ``per_dimension``: each latent coordinate against t;
    - ``best_direction``: t against the projection of the codes on the direction that best
      predicts t's ranks (least squares of rank(t) on the codes): how *straight* the
      unrolling is; an unrolled manifold need not align with a latent axis;
    - ``knn``: t against its k-NN prediction from the codes, the regressor fitted on
      ``train_codes`` (when given): whether t is a smooth function of the position in latent
      space, however curved the path the codes trace."""
    from scipy.stats import rankdata, spearmanr

    codes, t = np.asarray(_np(codes), dtype=np.float64), np.asarray(_np(coordinate), dtype=np.float64)
    per = [float(spearmanr(codes[:, j], t).statistic) for j in range(codes.shape[1])]
    design = np.c_[codes, np.ones(len(codes))]
    coef, *_ = np.linalg.lstsq(design, rankdata(t), rcond=None)
    out = {"per_dimension": per, "best_direction": float(spearmanr(design @ coef, t).statistic)}
    if train_codes is not None:
        from sklearn.neighbors import KNeighborsRegressor

        knn = KNeighborsRegressor(n_neighbors=k).fit(_np(train_codes), _np(train_coordinate))
        out["knn"] = float(spearmanr(knn.predict(codes), t).statistic)
    return out


def class_sample_agreement(samples, target: int, classifier) -> float:
    """The fraction of generated samples that ``classifier`` (trained on real data)
    assigns to the class they were generated for."""
    return float((classifier.predict(_np(samples).reshape(len(samples), -1)) == target).mean())


def real_data_classifier(x, labels, max_examples: int = 10_000, k: int = 5):
    """A k-NN classifier on raw features of real data, the judge of generated samples."""
    from sklearn.neighbors import KNeighborsClassifier

    x, labels = _np(x)[:max_examples], _np(labels)[:max_examples]
    return KNeighborsClassifier(n_neighbors=min(k, len(x))).fit(x.reshape(len(x), -1), labels)


@torch.no_grad()
def latent_metrics(model, data, *, seed: int = 0, samples_per_class: int = 100,
                   max_classes: int = 20) -> dict:
    """What the latent space shows, as numbers (the report prints these):

    - discrete labels: ``knn_accuracy``, a 5-NN classifier fitted on the posterior means of
      the training data and scored on those of the test data (how separate the classes'
      regions are); ``class_samples``: for each class, the fraction of ``class:LABEL``
      samples that a 5-NN classifier trained on real training data assigns to that class,
      next to that classifier's own accuracy on real test data; for a conditional model
      also ``label_samples``, the same rate for samples of p(x|z, y = class), z ~ p(z);
    - continuous labels (swiss roll): ``rank_correlation`` (:func:`manifold_rank_correlation`:
      along the best straight direction, and through a 5-NN regressor on the codes).
    """
    from .explore import Inputs, encode, sample, to_raw

    model.eval()
    out: dict = {"latent_dim": model.latent_dim}
    if data.train_labels is None or data.test_labels is None:
        return out
    train_codes = encode(model, data.train, labels=data.train_labels)
    test_codes = encode(model, data.test, labels=data.test_labels)
    if data.train_labels.is_floating_point():
        out["rank_correlation"] = manifold_rank_correlation(test_codes, data.test_labels,
                                                            train_codes, data.train_labels)
        return out
    out["knn_accuracy"] = latent_knn_accuracy(train_codes, data.train_labels, test_codes,
                                              data.test_labels)
    judge = real_data_classifier(to_raw(model, data.train), data.train_labels)
    real = to_raw(model, data.test)
    out["classifier_test_accuracy"] = float(
        (judge.predict(_np(real).reshape(len(real), -1)) == _np(data.test_labels)).mean())
    codes = Inputs(train_codes, data.train_labels, data.spec.class_names, "train")
    names = data.spec.class_names or [str(int(c)) for c in torch.unique(data.train_labels)]
    per_class, per_label = {}, {}
    for c in range(min(len(names), max_classes)):
        if int((data.train_labels == c).sum()) < 2:
            continue
        x, _ = sample(model, samples_per_class, f"class:{names[c]}", seed=seed + c, codes=codes)
        per_class[names[c]] = class_sample_agreement(x, c, judge)
        if model.conditional:  # z from the prior, x from p(x|z, y = c)
            x, _ = sample(model, samples_per_class, seed=seed + c, label=names[c])
            per_label[names[c]] = class_sample_agreement(x, c, judge)
    out["class_samples"] = per_class
    out["class_samples_mean"] = float(np.mean(list(per_class.values()))) if per_class else None
    if per_label:
        out["label_samples"] = per_label
        out["label_samples_mean"] = float(np.mean(list(per_label.values())))
    out["samples_per_class"] = samples_per_class
    return out


def _np(a):
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else a
