"""The report's figures, each with a short plain-language reading."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import explore, plots
from ..checkpoint import METRICS, read_jsonl

log = logging.getLogger(__name__)


@dataclass
class Figure:
    name: str  # file stem in RUN/figures/
    title: str
    png: bytes
    reading: str  # a short plain-language reading of the picture


# ----------------------------------------------------------------------- figures


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _images(model, x: torch.Tensor) -> np.ndarray:
    """Raw-unit images (N, C, H, W) clipped to [0, 1] for display."""
    return np.clip(_np(explore.to_raw(model, x)), 0, 1)


def _two_axes(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Codes on two axes: themselves for L <= 2 (padded), else their first two principal
    axes (returned so other points can be projected alike)."""
    if codes.shape[1] == 1:
        return np.c_[codes, np.zeros(len(codes))], None
    if codes.shape[1] == 2:
        return codes, None
    center = codes.mean(0)
    _, _, vt = np.linalg.svd(codes - center, full_matrices=False)
    return (codes - center) @ vt[:2].T, np.vstack([center[None], vt[:2]])


def _project(points: np.ndarray, basis: np.ndarray | None) -> np.ndarray:
    if basis is None:
        return points if points.shape[1] == 2 else np.c_[points, np.zeros(len(points))]
    return (points - basis[0]) @ basis[1:].T


def make_figures(model, data, run_dir: Path, *, seed: int = 0, tsne: bool = False) -> list[Figure]:
    gen = np.random.default_rng(seed)  # one stream, drawn from in the figures' order
    figs, shown = _latent_figures(model, data, seed, gen, tsne)
    if model.data_spec.image:
        figs += _image_figures(model, data, seed, gen)
    else:
        figs.append(_data_figure(model, data, shown))
    curves = _curves_figure(run_dir)
    return figs + ([curves] if curves else [])


def _labels(model, data) -> tuple[np.ndarray | None, bool, list[str] | None]:
    """The test labels as an array, whether they are continuous, and the class names."""
    labels = data.test_labels
    continuous = labels is not None and labels.is_floating_point()
    return (_np(labels) if labels is not None else None), continuous, model.data_spec.class_names


def _latent_figures(model, data, seed: int, gen, tsne: bool) -> tuple[list[Figure], np.ndarray]:
    """Prior against posterior (and t-SNE of the codes); the codes as shown on two axes."""
    lab, continuous, names = _labels(model, data)
    figs: list[Figure] = []
    # prior vs posterior (of the top level, for a hierarchy)
    top = model.top_slice
    test_codes = _np(explore.encode(model, data.test, labels=data.test_labels))[:, top]
    prior_z = _np(explore.prior_sample(model, min(len(test_codes), 2000), seed))[:, top]
    shown, basis = _two_axes(test_codes)
    prior_shown = _project(prior_z, basis)
    prior_labels = gen.permutation(lab)[:len(prior_z)] if lab is not None else None
    z = f"z{len(model.levels)}" if model.hierarchical else "z"  # the level shown
    axes = ((f"principal axis 1 of the {z} codes", f"principal axis 2 of the {z} codes")
            if basis is not None else (f"{z}[1]", f"{z}[2]"))
    png = plots.png_bytes(plots.latent_prior_posterior(prior_shown, prior_labels, shown, lab, names,
                                                       axis_labels=axes, principal=basis is not None,
                                                       continuous=continuous))
    reading = ("Left, points drawn from the prior p(z) with labels assigned at random: before "
               "training means anything, the latent plane carries no class structure. Right, the "
               "posterior means of the test data coloured by their true labels. ")
    if lab is not None and not continuous and model.conditional:
        reading += ("This model is conditional: its encoder and decoder are given the class y, "
                    "so its codes need not carry the class and mostly carry style (what varies "
                    "within a class). Colours mixed across the plane are what it should show; "
                    "they are not class regions, and new examples of a class come from "
                    "p(x|z, y) with `vaekit sample RUN --label LABEL`.")
    elif lab is not None and not continuous:
        reading += ("Where colours gather into separate regions, the encoder has learned what "
                    "tells the classes apart without ever seeing a label.")
    elif continuous:
        reading += "A smooth colour gradient means the codes follow the label's order."
    if model.hierarchical:
        reading += (f" The model has {len(model.levels)} latent levels (sizes {model.levels} from "
                    f"the data up); these panels show the top one, z{len(model.levels)}, the "
                    "level the prior p(z) is placed on.")
    if basis is not None:
        reading += (f" The latent space shown has {test_codes.shape[1]} dimensions; both panels "
                    "show the test codes' first two principal axes, with the prior draws "
                    "projected on them.")
    figs.append(Figure("latent", "Prior and posterior in latent space", png, reading))

    if tsne and test_codes.shape[1] > 2:
        from sklearn.manifold import TSNE

        n = min(2000, len(test_codes))
        emb = TSNE(n_components=2, random_state=seed, init="pca").fit_transform(test_codes[:n])
        fig = plots.figure(figsize=(6.5, 6))
        ax = fig.add_subplot(1, 1, 1)
        plots._scatter(ax, emb, lab[:n] if lab is not None else None, names,
                       "t-SNE of the test codes", continuous)
        figs.append(Figure("latent_tsne", "t-SNE of the posterior means", plots.png_bytes(fig),
                           "t-SNE keeps near neighbours near; distances between far clusters "
                           "and cluster sizes mean little."))
    return figs, shown


def _image_figures(model, data, seed: int, gen) -> list[Figure]:
    """Manifold (two latent units), reconstructions, samples, interpolations, class samples."""
    lab, continuous, _ = _labels(model, data)
    conditional = model.conditional
    figs: list[Figure] = []
    # manifold
    if model.latent_dim == 2 and not conditional:
        z1, z2, grid = explore.manifold(model, 20)
        figs.append(Figure(
            "manifold", "The decoded latent manifold",
            plots.png_bytes(plots.manifold(np.clip(_np(grid), 0, 1), z1, z2)),
            "Each cell is the mean of p(x|z) at one point of a 20 x 20 grid laid on the "
            "prior's quantiles (5% to 95% in each coordinate), so the grid covers where the "
            "prior puts its mass. Neighbouring cells decode to similar images; the "
            "transitions show how the model morphs one kind of example into another."))
    # reconstructions
    n = min(20, len(data.test))
    y_test = data.test_labels[:n] if data.test_labels is not None else None
    recon = explore.reconstruct(model, data.test[:n], labels=y_test)
    figs.append(Figure(
        "reconstructions", "Reconstructions",
        plots.png_bytes(plots.reconstructions(_images(model, data.test[:n]), _images(model, recon))),
        "Test images (odd rows) above the means of p(x|z) at their posterior means (even "
        "rows). Blur is the model's uncertainty: the mean of a Bernoulli or Gaussian "
        "likelihood averages over the images the code could stand for."))
    # samples
    z = explore.prior_sample(model, 64, seed)
    classes = torch.arange(64) % model.num_classes if conditional else None  # class i % K
    means = explore.decode_mean(model, z, labels=classes)
    draws = explore.decode_draw(model, z, torch.Generator().manual_seed(seed), labels=classes)
    figs.append(Figure(
        "samples", "Samples from the prior",
        plots.png_bytes(plots.samples(_images(model, means), _images(model, draws))),
        "New images: z drawn from the prior p(z), decoded. Left the means of p(x|z) (what "
        "papers usually show), right one draw from p(x|z) for the same z (what the model "
        "actually generates, pixel noise included). Blurry or mixed images come from "
        "regions of the prior that no training image's code covers."))
    # interpolations
    pairs = _interpolation_pairs(lab, continuous, len(data.test), 6, gen)
    ys = data.test_labels
    paths = explore.interpolate(model, data.test[pairs[:, 0]], data.test[pairs[:, 1]], 10,
                                ya=ys[pairs[:, 0]] if ys is not None else None,
                                yb=ys[pairs[:, 1]] if ys is not None else None)
    figs.append(Figure(
        "interpolations", "Interpolations",
        plots.png_bytes(plots.interpolations(np.clip(_np(explore.to_raw(model, paths)), 0, 1))),
        "Each row decodes ten evenly spaced points on the straight line between the codes "
        "of two test examples (first and last columns). A smooth path of plausible images "
        "means the latent space is continuous where the data are."))
    # samples per class
    if lab is not None and not continuous and data.train_labels is not None:
        rows, row_names = _class_rows(model, data, seed)
        if rows:
            figs.append(Figure(
                "class_samples", "Samples from each class's region",
                plots.png_bytes(plots.samples_per_class(rows, row_names)),
                "For each class, a Gaussian mixture fitted by EM to the posterior means of "
                "that class's training examples only; z drawn from it and decoded "
                "(`vaekit sample RUN --sampler class:LABEL`). The rate at which a classifier "
                "trained on real data recognises these samples is in the table above."))
        if conditional:
            rows, row_names = _class_rows(model, data, seed, conditional=True)
            figs.append(Figure(
                "label_samples", "Samples of each class from the conditional model",
                plots.png_bytes(plots.samples_per_class(
                    rows, row_names, "samples of p(x|z, y) for each class y, z from the prior "
                                     "(--label LABEL)")),
                "For each class y, z drawn from the prior and decoded by p(x|z, y) "
                "(`vaekit sample RUN --label LABEL`): the conditional model's own way to "
                "make a new example of a class, beside the class-region samples above. "
                "Their recognition rates are in the table above."))
    return figs


def _data_figure(model, data, shown: np.ndarray) -> Figure:
    """Non-image data (first three features) beside their codes."""
    lab, continuous, names = _labels(model, data)
    x = _np(explore.to_raw(model, data.test))
    return Figure(
        "data_latent", "Data and latent coordinates",
        plots.png_bytes(plots.data_and_latent(x, shown, lab, continuous, names)),
        "Left the test data (first three features), right their posterior means, both "
        "coloured by label. For the swiss roll, an unrolled latent space shows the colour "
        "(the position along the roll) changing smoothly in one direction.")


def _curves_figure(run_dir: Path) -> Figure | None:
    """Training curves from the run's metrics, if it has any."""
    rows = _metrics(run_dir)
    if not rows:
        return None
    return Figure(
        "curves", "Training curves", plots.png_bytes(plots.training_curves(rows)),
        "Per epoch, on training (one stochastic pass, during warm-up with the KL weighted "
        "by beta < 1 in the loss but not here) and validation data: the ELBO and its two "
        "parts. A validation ELBO that turns down while the training ELBO rises is "
        "over-fitting; the best validation epoch is the model kept.")


def _interpolation_pairs(labels, continuous: bool, n: int, count: int, gen) -> np.ndarray:
    """Pairs of test indices, from different classes when labels are discrete."""
    pairs = []
    order = gen.permutation(n)
    for i in order:
        if len(pairs) == count:
            break
        for j in order[::-1]:
            if i != j and (labels is None or continuous or labels[i] != labels[j]) and \
                    all(j != p[1] and i != p[0] for p in pairs):
                pairs.append((i, j))
                break
    while len(pairs) < count:  # tiny data sets
        pairs.append((int(order[0]), int(order[-1])))
    return np.asarray(pairs[:count])


def _class_rows(model, data, seed: int, per_row: int = 10, max_rows: int = 10,
                conditional: bool = False):
    """Rows of samples per class: from each class's region of the codes, or (``conditional``)
    from p(x|z, y = class) with z from the prior."""
    codes = explore.Inputs(explore.encode(model, data.train, labels=data.train_labels),
                           data.train_labels, data.spec.class_names, "train")
    names = data.spec.class_names or [str(int(c)) for c in torch.unique(data.train_labels)]
    rows, row_names = [], []
    for c, name in enumerate(names[:max_rows]):
        if int((data.train_labels == c).sum()) < 2:
            continue
        x, _ = (explore.sample(model, per_row, seed=seed + c, label=name) if conditional else
                explore.sample(model, per_row, f"class:{name}", seed=seed + c, codes=codes))
        rows.append(np.clip(_np(x), 0, 1))
        row_names.append(name)
    return rows, row_names


def _metrics(run_dir: Path) -> list[dict]:
    return read_jsonl(run_dir / METRICS)
