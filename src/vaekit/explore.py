"""What a trained run can do: sample, encode, reconstruct, interpolate, decode a latent grid.

Every function takes the trained :class:`~vaekit.model.VAE` (from :func:`vaekit.load_run`)
and works batched under ``torch.no_grad()`` in eval mode. Inputs are read through the run's
own :class:`~vaekit.data.DataSpec`: the same scaling, the same shape check, the same
likelihood support check as training, so a user's file is refused with a clear reason
rather than silently mis-modelled. Outputs come back in the data's raw units
(``spec.inverse``), which for images means grey levels in [0, 1].

Latent samplers (``prior``, ``gmm``, ``class:LABEL``) are built in :mod:`vaekit.mixture`;
:func:`sample` draws z from one of them and decodes it.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .data import Where, data_dir_from, dataset_for_spec, prepare_like, read_raw
from .devices import model_device, seeded
from .errors import DataError, VaekitError
from .mixture import latent_sampler, parse_sampler, resolve_class
from .objectives import reparameterize

#: latent vectors decoded at once; decoder activations stay well under 100 MB
BATCH = 1024


@dataclass
class Inputs:
    """Examples in model space ``(N, *x_shape)`` with their labels, if any."""

    x: torch.Tensor
    labels: torch.Tensor | None
    class_names: list[str] | None
    source: str


def run_split(model, split: str = "test", data_dir: str | None = None) -> Inputs:
    """A split of exactly the data the run was trained on (checked by the test checksum)."""
    if split not in ("train", "valid", "test"):
        raise ValueError(f"split must be train, valid or test, got {split!r}")
    data = dataset_for_spec(model.data_spec, data_dir)
    return Inputs(*data.split(split), data.spec.class_names,
                  f"{data.spec.name} ({split} split)")


def user_inputs(model, name: str, data_dir: str | None = None) -> Inputs:
    """Other data for a trained model: a built-in dataset (its test split, else all of it)
    or a user's file, transformed as the run's data was and checked against the model."""
    spec = model.data_spec
    size = tuple(spec.image_size) if spec.image_size else None
    raw = read_raw(name, Where(data_dir_from(data_dir), spec.split_seed, image_size=size))
    split = "test" if "test" in raw.splits else "train"
    x = np.asarray(raw.splits[split], dtype=np.float32)
    if tuple(x.shape[1:]) != tuple(spec.shape):
        raise DataError(f"{name}: examples of shape {tuple(x.shape[1:])} do not fit this run's "
                        f"model, which takes {tuple(spec.shape)}")
    try:
        xt = prepare_like(spec, torch.from_numpy(x))  # binarised and scaled as the run's test set
        model.likelihood.check_data(xt, name)
    except ValueError as e:
        raise DataError(f"{name}: {e}" if not str(e).startswith("the ") else str(e)) from None
    y = raw.labels.get(split)
    labels = torch.from_numpy(np.asarray(y)) if y is not None else None
    return Inputs(xt, labels, raw.class_names, name)


def _given(model, labels, i: int, device):
    """The model for examples i.. of a batch: a conditional model with their classes fixed."""
    if not model.conditional:
        return model
    if labels is None:
        raise VaekitError("this run's model is conditional: it needs each example's class "
                          "(labelled data, or --label for samples)")
    return model.given(torch.as_tensor(labels)[i:i + BATCH].to(device))


@torch.no_grad()
def encode(model, x: torch.Tensor, stochastic: bool = False,
           generator: torch.Generator | None = None, labels=None) -> torch.Tensor:
    """Posterior means E_q[z|x] (the default embedding), or one draw z ~ q(z|x) each: (N, L).
    A conditional model reads each example's class from ``labels``."""
    model.eval()
    device = model_device(model)
    out = []
    for i in range(0, len(x), BATCH):
        xb = x[i:i + BATCH]
        q = _given(model, labels, i, device).encode(xb.to(device))
        if stochastic:  # eps from the CPU generator: the same draws on any device
            eps = torch.randn(len(xb), *model.noise_shape, generator=generator)
            out.append(reparameterize(q, 1, eps[None].to(device))[0].float().cpu())
        else:
            out.append(q.mean.float().cpu())
    return torch.cat(out) if out else torch.empty(0, model.latent_dim)


@torch.no_grad()
def decode_mean(model, z: torch.Tensor, labels=None) -> torch.Tensor:
    """The mean of p(x|z) for each z, in model space: (N, *x_shape) (a conditional model:
    p(x|z, y) with the classes, or class weights, in ``labels``)."""
    model.eval()
    device = model_device(model)
    return torch.cat([_given(model, labels, i, device).decode(z[i:i + BATCH].to(device)).mean.float().cpu()
                      for i in range(0, len(z), BATCH)])


@torch.no_grad()
def decode_draw(model, z: torch.Tensor, generator: torch.Generator | None = None,
                labels=None) -> torch.Tensor:
    """One draw x ~ p(x|z) per z (binary images for a Bernoulli likelihood)."""
    model.eval()
    device = model_device(model)
    out = []
    for i in range(0, len(z), BATCH):
        px = _given(model, labels, i, device).decode(z[i:i + BATCH].to(device))
        seed = int(torch.randint(2**31 - 1, (1,), generator=generator)) if generator is not None else None
        with seeded(seed, device):
            out.append(px.sample().float().cpu())
    return torch.cat(out)


def code_names(model) -> list[str]:
    """Column names of the latent vector: z1..zL for one level; for a hierarchy z1_1, ...,
    z1_n (the level next to the data), z2_1, ... (the posterior's ancestral means)."""
    if not model.hierarchical:
        return [f"z{i + 1}" for i in range(model.latent_dim)]
    return [f"z{level + 1}_{i + 1}" for level, size in enumerate(model.levels) for i in range(size)]


def to_raw(model, x: torch.Tensor) -> torch.Tensor:
    """Model space -> the data's raw units (undo standardisation)."""
    return model.data_spec.inverse(x)


def reconstruct(model, x: torch.Tensor, labels=None) -> torch.Tensor:
    """The mean of p(x|z) at the posterior mean, in model space."""
    return decode_mean(model, encode(model, x, labels=labels), labels=labels)


def interpolate(model, xa: torch.Tensor, xb: torch.Tensor, steps: int = 10,
                ya=None, yb=None) -> torch.Tensor:
    """Decoded points on the straight line between the codes of xa and xb (posterior
    means), endpoints included: (P, steps, *x_shape) for P pairs. A conditional model's
    class moves along the same line, from ya's one-hot vector to yb's."""
    if steps < 2:
        raise ValueError(f"steps must be at least 2, got {steps}")
    za, zb = encode(model, xa, labels=ya), encode(model, xb, labels=yb)  # (P, L)
    t = torch.linspace(0, 1, steps)[None, :, None]  # (1, S, 1)
    path = za[:, None] * (1 - t) + zb[:, None] * t  # (P, S, L)
    classes = None
    if model.conditional:
        ca, cb = model.condition(torch.as_tensor(ya)), model.condition(torch.as_tensor(yb))
        classes = (ca[:, None] * (1 - t) + cb[:, None] * t).reshape(-1, ca.shape[-1])
    return decode_mean(model, path.reshape(-1, path.shape[-1]), labels=classes).reshape(
        len(za), steps, *model.x_shape)


def training_codes(model, data_dir: str | None = None) -> Inputs:
    """Posterior means of the run's training data (what the gmm and class samplers fit)."""
    train = run_split(model, "train", data_dir)
    return Inputs(encode(model, train.x, labels=train.labels), train.labels, train.class_names,
                  train.source)


@torch.no_grad()
def prior_sample(model, n: int, seed: int) -> torch.Tensor:
    """n draws z ~ p(z) for this seed, on the CPU (torch's global generators untouched):
    the one way every command, the report and the estimator draw from the prior."""
    with seeded(seed, model_device(model)):
        return model.prior.sample((n,)).cpu()


def sample(model, n: int, sampler: str = "prior", seed: int = 0, data_dir: str | None = None,
           draw: bool = False, codes: Inputs | None = None,
           label: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """n new examples (raw units) and their codes: z from the chosen sampler, then the
    mean of p(x|z), or a draw from it with ``draw=True``.

    ``sampler`` is ``prior``; ``gmm`` (a Gaussian mixture fitted by EM to the posterior
    means of the training data: ex-post density estimation, Ghosh et al. 2020); or
    ``class:LABEL`` (a mixture fitted to the codes of that class only). A conditional model
    decodes with the class ``label`` (a name or an index): z from the prior, x from
    p(x|z, y); with ``class:LABEL`` it decodes with that class, and with neither the n
    samples go through the classes in turn."""
    if n < 1:
        raise ValueError(f"the number of samples must be at least 1, got {n}")
    kind, class_label = parse_sampler(sampler)
    conditional = model.conditional
    names = model.data_spec.class_names
    if label is not None and not conditional:
        raise VaekitError("--label needs a conditional model (model.conditional = true); for "
                          f"this run, sample a class's region with --sampler class:{label}")
    if label is not None and kind != "prior":
        raise VaekitError("--label draws z from the prior; give it without --sampler")
    gen = torch.Generator().manual_seed(seed)
    classes = None
    if kind == "prior":
        z = prior_sample(model, n, seed)
        if conditional:
            classes = (torch.full((n,), resolve_class(label, names, True)) if label is not None
                       else torch.arange(n) % model.num_classes)
    else:
        codes = codes or training_codes(model, data_dir)
        target = None
        if kind == "class":
            if codes.labels is not None and codes.labels.is_floating_point():
                raise VaekitError("the class:LABEL sampler needs discrete class labels; this "
                                  "run's labels are continuous (use --sampler gmm)")
            target = resolve_class(class_label, codes.class_names, codes.labels)
        z = latent_sampler(kind, codes=codes.x, labels=codes.labels, target=target, seed=seed)(n)
        if conditional:
            if target is None:
                raise VaekitError("a conditional model decodes with a class: use --sampler "
                                  "class:LABEL or --label LABEL")
            classes = torch.full((n,), target)
    x = decode_draw(model, z, gen, labels=classes) if draw else decode_mean(model, z, labels=classes)
    return to_raw(model, x), z


def prior_quantile_grid(model, size: int, lo: float = 0.05, hi: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Per latent dimension, ``size`` values at evenly spaced quantiles of the prior's
    marginal (Kingma & Welling's figure 4 grid): exact inverse CDFs for a diagonal normal
    prior, empirical quantiles of 20,000 prior draws for mixture and VampPrior."""
    q = torch.linspace(lo, hi, size, dtype=torch.float64)
    prior = model.prior
    base = getattr(prior, "base_dist", None)
    if isinstance(base, torch.distributions.Normal):
        loc, scale = base.loc.detach().cpu().double(), base.scale.detach().cpu().double()
        values = torch.distributions.Normal(loc[None], scale[None]).icdf(q[:, None])  # (G, L)
    else:
        with seeded(0, model_device(model)), torch.no_grad():
            draws = prior.sample((20_000,)).cpu().double()
        values = torch.quantile(draws, q, dim=0)  # (G, L)
    return values[:, 0].numpy(), values[:, 1].numpy()


def manifold(model, size: int = 20) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """For a 2-D latent: decoded means on a size x size inverse-CDF grid of the prior,
    rows from high z2 to low (as a picture is read), columns from low z1 to high."""
    if model.latent_dim != 2:
        raise ValueError(f"the latent manifold grid needs a 2-D latent space, this model has "
                         f"{model.latent_dim}")
    z1, z2 = prior_quantile_grid(model, size)
    zz = torch.tensor([[a, b] for b in z2[::-1] for a in z1], dtype=torch.float32)
    return z1, z2, to_raw(model, decode_mean(model, zz))


def plane_grid(model, lim: float, size: int) -> torch.Tensor:
    """Decoded means on an evenly spaced size x size grid over [-lim, lim]^2 (the latent
    explorer's cells), rows from high z2 to low: (size * size, *x_shape)."""
    axis = torch.linspace(-lim, lim, size)
    zz = torch.stack([axis.repeat(size), axis.flip(0).repeat_interleave(size)], 1)
    return to_raw(model, decode_mean(model, zz))


# ------------------------------------------------------------------------- writing


def write_output(path: str | Path, array: torch.Tensor | np.ndarray, *, labels=None,
                 image: bool = False, columns: list[str] | None = None, cols: int | None = None) -> Path:
    """Write results where ``--out`` says, atomically: ``.png`` (a grid of images),
    ``.npy``, ``.npz`` (``x`` and, when given, ``y``) or ``.csv`` (one row per example,
    a ``label`` column when labels are given)."""
    from .checkpoint import atomic_write_bytes

    path = Path(path)
    arr = array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
    lab = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else labels
    suffix = path.suffix.lower()
    if suffix == ".png":
        if not image:
            raise VaekitError(f"{path}: a PNG grid needs image data; write .npy or .csv instead")
        from . import plots

        imgs = arr.reshape(-1, *arr.shape[-3:])
        atomic_write_bytes(path, plots.grid_png(imgs, cols=cols))
    elif suffix == ".npy":
        buf = io.BytesIO()
        np.save(buf, arr)
        atomic_write_bytes(path, buf.getvalue())
    elif suffix == ".npz":
        buf = io.BytesIO()
        np.savez(buf, **({"x": arr, "y": lab} if lab is not None else {"x": arr}))
        atomic_write_bytes(path, buf.getvalue())
    elif suffix == ".csv":
        flat = arr.reshape(len(arr), -1)
        names = columns or [f"x{i + 1}" for i in range(flat.shape[1])]
        text = io.StringIO()
        w = csv.writer(text, lineterminator="\n")
        w.writerow(names + (["label"] if lab is not None else []))
        for i, row in enumerate(flat):
            w.writerow([f"{v:.7g}" for v in row] + ([_label_text(lab[i])] if lab is not None else []))
        atomic_write_bytes(path, text.getvalue().encode())
    else:
        raise VaekitError(f"{path}: unknown output type {suffix or '(none)'!r}; use .png, .npy, "
                          ".npz or .csv")
    return path


def _label_text(v) -> str:
    v = float(v)
    return str(int(v)) if v.is_integer() else f"{v:.7g}"


def grid_columns(n: int) -> int:
    return max(1, int(math.ceil(math.sqrt(n))))
