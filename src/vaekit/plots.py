"""Figures from arrays (matplotlib, Agg): nothing here trains or evaluates.

Each function returns a ``Figure``; :func:`save` writes it as PNG atomically. Images are
arrays of shape (N, C, H, W) with values in [0, 1]; C = 1 is shown in grey, C = 3 in colour.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse

from .checkpoint import atomic_write_bytes


# Figures are made with matplotlib's object-oriented API and rendered by its Agg canvas:
# pyplot (and its global backend, which a notebook user chooses) is never touched.
def figure(**kwargs) -> Figure:
    return Figure(**kwargs)


def subplots(nrows: int = 1, ncols: int = 1, **kwargs):
    """pyplot.subplots without pyplot: (figure, axes) on a Figure of its own."""
    subplot_kw = {k: kwargs.pop(k) for k in ("squeeze", "sharex", "sharey", "gridspec_kw",
                                             "subplot_kw") if k in kwargs}
    fig = Figure(**kwargs)
    return fig, fig.subplots(nrows, ncols, **subplot_kw)


def colormap(name: str):
    return matplotlib.colormaps[name]


def png_bytes(fig, dpi: int = 100) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def save(fig, path: str | Path, dpi: int = 100) -> bytes:
    data = png_bytes(fig, dpi)
    atomic_write_bytes(path, data)
    return data


def tile(images: np.ndarray, rows: int | None = None, cols: int | None = None, pad: int = 1) -> np.ndarray:
    """(N, C, H, W) -> one (rows*H, cols*W[, 3]) mosaic with a pad-pixel white border."""
    images = np.clip(np.asarray(images, dtype=np.float32), 0, 1)
    n, c, h, w = images.shape
    if c not in (1, 3):
        images, c = images[:, :1], 1
    cols = cols or int(math.ceil(math.sqrt(n)))
    rows = rows or int(math.ceil(n / cols))
    grid = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad, c), dtype=np.float32)
    for i in range(min(n, rows * cols)):
        r, q = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + q * (w + pad)
        grid[y:y + h, x:x + w] = images[i].transpose(1, 2, 0)
    return grid[..., 0] if c == 1 else grid


def grid_png(images: np.ndarray, cols: int | None = None, min_side: int = 320) -> bytes:
    """A plain PNG of a tiled image grid (no axes), enlarged by an integer factor with
    nearest-neighbour pixels until its shorter side reaches ``min_side``."""
    from PIL import Image

    mosaic = tile(images, cols=cols)
    scale = max(1, int(math.ceil(min_side / min(mosaic.shape[:2]))))
    pixels = np.round(mosaic * 255).astype(np.uint8)
    img = Image.fromarray(pixels)  # (H, W) -> grey, (H, W, 3) -> RGB
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def image_grid(images: np.ndarray, title: str = "", cols: int | None = None, size: float = 6.0):
    mosaic = tile(images, cols=cols)
    fig, ax = subplots(figsize=(size, size * mosaic.shape[0] / mosaic.shape[1]))
    ax.imshow(mosaic, cmap="gray" if mosaic.ndim == 2 else None, vmin=0, vmax=1,
              interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return fig


def reconstructions(originals: np.ndarray, recon: np.ndarray):
    """Originals (top row of each pair) above their reconstructions."""
    n = len(originals)
    cols = min(n, 10)
    rows = int(math.ceil(n / cols))
    paired = []
    for r in range(rows):
        block = slice(r * cols, min(n, (r + 1) * cols))
        paired += [originals[block], recon[block]]
    width = max(len(p) for p in paired)
    padded = [np.concatenate([p, np.ones((width - len(p), *p.shape[1:]))]) if len(p) < width else p
              for p in paired]
    return image_grid(np.concatenate(padded), "originals (odd rows) above reconstructions (even rows)",
                      cols=width)


def interpolations(paths: np.ndarray):
    """paths: (P, S, C, H, W), one row per pair, from the first example to the second."""
    p, s = paths.shape[:2]
    return image_grid(paths.reshape(p * s, *paths.shape[2:]),
                      "decoded straight lines between the codes of two test examples", cols=s)


def _scatter(ax, points: np.ndarray, labels, class_names, title: str, continuous: bool):
    if labels is None:
        ax.scatter(points[:, 0], points[:, 1], s=4, alpha=0.6, color="tab:blue")
    elif continuous:
        sc = ax.scatter(points[:, 0], points[:, 1], c=labels, s=4, cmap="viridis", alpha=0.8)
        ax.figure.colorbar(sc, ax=ax, fraction=0.046, pad=0.02, label="label")
    else:
        cmap = colormap("tab10" if (labels.max() + 1) <= 10 else "tab20")
        for k in np.unique(labels):
            sel = labels == k
            name = class_names[k] if class_names and k < len(class_names) else str(k)
            ax.scatter(points[sel, 0], points[sel, 1], s=4, alpha=0.7, color=cmap(int(k) % cmap.N),
                       label=name)
        ax.legend(markerscale=3, fontsize=7, loc="best", framealpha=0.7, title="class")
    ax.set_title(title, fontsize=10)


def latent_prior_posterior(prior_z, prior_labels, codes, labels, class_names=None,
                           axis_labels: tuple[str, str] = ("z[1]", "z[2]"),
                           principal: bool = False, continuous: bool = False):
    """Left: draws from p(z) coloured by random labels; right: posterior means of test data
    coloured by their true labels."""
    fig, axes = subplots(1, 2, figsize=(12, 5.5))
    _scatter(axes[0], prior_z, prior_labels, class_names,
             "prior p(z), random labels (before learning means anything)", continuous)
    _scatter(axes[1], codes, labels, class_names, "posterior means E_q[z|x] of test data, true labels",
             continuous)
    for ax in axes:
        ax.set_xlabel(axis_labels[0])
        ax.set_ylabel(axis_labels[1])
    lim = np.percentile(np.abs(np.concatenate([prior_z, codes])), 99.5) * 1.1
    for ax in axes:
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
    if principal:
        fig.suptitle("latent dimension > 2: shown on the first two principal axes of the test codes")
    return fig


def manifold(grid_images: np.ndarray, z1: np.ndarray, z2: np.ndarray):
    """A (G*G, C, H, W) grid of decoded images laid over the latent plane (rows: z2 falling)."""
    g = len(z1)
    mosaic = tile(grid_images, rows=g, cols=g, pad=0)
    fig, ax = subplots(figsize=(8, 8))
    ax.imshow(mosaic, cmap="gray" if mosaic.ndim == 2 else None, vmin=0, vmax=1,
              extent=(0, g, 0, g))
    ticks = np.arange(g) + 0.5
    step = max(1, g // 6)
    ax.set_xticks(ticks[::step], [f"{v:.2f}" for v in z1[::step]])
    ax.set_yticks(ticks[::step], [f"{v:.2f}" for v in z2[::step]])
    ax.set_xlabel("z1 (prior quantiles)")
    ax.set_ylabel("z2 (prior quantiles)")
    ax.set_title("decoded latent manifold: means of p(x|z) on an inverse-CDF grid of the prior")
    return fig


def training_curves(rows: list[dict]):
    epochs = [r["epoch"] for r in rows]
    fig, axes = subplots(1, 3, figsize=(14, 4))
    for ax, key, title in zip(axes, ("elbo", "reconstruction", "kl"),
                              ("ELBO (nats)", "reconstruction E_q log p(x|z)", "KL(q || p)")):
        ax.plot(epochs, [r[f"train_{key}"] for r in rows], label="train")
        if all(f"valid_{key}" in r for r in rows):  # none in a data.refit run
            ax.plot(epochs, [r[f"valid_{key}"] for r in rows], label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


def data_and_latent(x: np.ndarray, codes: np.ndarray, labels, continuous: bool, class_names=None):
    """Non-image data: the data (3-D scatter, or a pair plot of its first features) next to
    the latent coordinates, both coloured by label."""
    fig = figure(figsize=(12, 5.5))
    if x.shape[1] >= 3:
        ax = fig.add_subplot(1, 2, 1, projection="3d")
        kw = dict(c=labels, cmap="viridis") if (labels is not None and continuous) else {}
        ax.scatter(x[:, 0], x[:, 1], x[:, 2], s=3, **kw)
        ax.set_title("data (first three features)")
    else:
        ax = fig.add_subplot(1, 2, 1)
        _scatter(ax, x[:, :2] if x.shape[1] > 1 else np.c_[x[:, 0], np.zeros(len(x))],
                 labels, class_names, "data", continuous)
    ax2 = fig.add_subplot(1, 2, 2)
    _scatter(ax2, codes[:, :2] if codes.shape[1] > 1 else np.c_[codes[:, 0], np.zeros(len(codes))],
             labels, class_names, "latent codes (posterior means)", continuous)
    return fig


def mixture_fit(x: np.ndarray, weights, means, covariances, covariance_type: str, labels=None):
    """2-D: the data with each component's 1- and 2-sigma ellipses; 1-D: the mixture density
    and its K weighted components over a histogram."""
    fig, ax = subplots(figsize=(7, 6))
    if x.shape[1] == 1:
        grid = np.linspace(x.min() - 1, x.max() + 1, 600)
        ax.hist(x[:, 0], bins=80, density=True, color="0.85", label="data")
        total = np.zeros_like(grid)
        for k, (w, m, c) in enumerate(zip(weights, means, covariances)):
            var = float(np.ravel(c)[0])
            comp = w * np.exp(-0.5 * (grid - m[0]) ** 2 / var) / np.sqrt(2 * np.pi * var)
            total += comp
            ax.plot(grid, comp, lw=1, label=f"component {k + 1}" if k < 10 else None)
        ax.plot(grid, total, color="k", lw=2, label="mixture density")
        ax.set_xlabel("x")
        ax.legend(fontsize=7)
    else:
        ax.scatter(x[:, 0], x[:, 1], s=3, alpha=0.4, c=labels if labels is not None else "tab:blue")
        for k, (w, m, c) in enumerate(zip(weights, means, covariances)):
            cov = np.diag(c[:2]) if covariance_type == "diag" else np.asarray(c)[:2, :2]
            vals, vecs = np.linalg.eigh(cov)
            angle = np.degrees(np.arctan2(vecs[1, 1], vecs[0, 1]))
            for n_sigma in (1, 2):
                ax.add_patch(Ellipse(m[:2], 2 * n_sigma * np.sqrt(vals[1]), 2 * n_sigma * np.sqrt(vals[0]),
                                     angle=angle, fill=False, color="tab:red", lw=1.5 / n_sigma,
                                     alpha=0.4 + 0.6 * w / max(weights)))
        ax.set_xlabel("dimension 1")
        ax.set_ylabel("dimension 2")
    ax.set_title(f"Gaussian mixture fit by EM, K = {len(weights)}")
    return fig


def log_likelihood_history(history: list[float]):
    fig, ax = subplots(figsize=(6, 4))
    ax.plot(np.arange(1, len(history) + 1), history, marker="o", ms=3)
    ax.set_xlabel("EM iteration")
    ax.set_ylabel("mean log-likelihood")
    ax.set_title("EM: the log-likelihood rises at every iteration")
    ax.grid(alpha=0.3)
    return fig


def samples_per_class(rows: list[np.ndarray], names: list[str],
                      title: str = "samples from each class's region of the latent space "
                                   "(class:LABEL sampler)"):
    """One row of samples per class."""
    n = max(len(r) for r in rows)
    fig, axes = subplots(len(rows), 1, figsize=(n * 0.7, len(rows) * 0.75 + 0.6), squeeze=False,
                         layout="constrained")
    for ax, images, name in zip(axes[:, 0], rows, names):
        mosaic = tile(images, rows=1, cols=n)
        ax.imshow(mosaic, cmap="gray" if mosaic.ndim == 2 else None, vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(name, rotation=0, ha="right", va="center")
    fig.suptitle(title)
    return fig


def samples(means: np.ndarray, draws: np.ndarray | None = None):
    """Prior samples: the means of p(x|z) (left) and, when given, one draw x ~ p(x|z) each
    (right), for the same z."""
    panels = [(means, "means of p(x|z), z ~ p(z)")] + (
        [(draws, "draws x ~ p(x|z), same z")] if draws is not None else [])
    fig, axes = subplots(1, len(panels), figsize=(6 * len(panels), 6), squeeze=False)
    for ax, (images, title) in zip(axes[0], panels):
        mosaic = tile(images)
        ax.imshow(mosaic, cmap="gray" if mosaic.ndim == 2 else None, vmin=0, vmax=1,
                  interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(title)
    return fig


def latent_background(codes: np.ndarray, labels, lim: float, pixels: int = 400,
                      continuous: bool = False) -> bytes:
    """PNG of the codes on [-lim, lim]^2 filling the whole image (no margins, no axes), so
    pixel (u, v) is z = (-lim + 2 lim u / W, lim - 2 lim v / H): the explorer's plane."""
    fig = figure(figsize=(pixels / 100, pixels / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    if labels is None:
        ax.scatter(codes[:, 0], codes[:, 1], s=3, alpha=0.5, color="tab:blue")
    elif continuous:
        ax.scatter(codes[:, 0], codes[:, 1], s=3, alpha=0.7, c=labels, cmap="viridis")
    else:
        cmap = colormap("tab10" if labels.max() < 10 else "tab20")
        ax.scatter(codes[:, 0], codes[:, 1], s=3, alpha=0.6, c=[cmap(int(k) % cmap.N) for k in labels])
    ax.axhline(0, color="0.8", lw=0.5)
    ax.axvline(0, color="0.8", lw=0.5)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_axis_off()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)  # no bbox_inches: keep the exact extent
    return buf.getvalue()


def sprite_png(images: np.ndarray, size: int) -> bytes:
    """(size*size, C, H, W) -> one PNG of the grid at native resolution, no padding (the
    explorer cuts cell (row, col) out of it)."""
    from PIL import Image

    mosaic = tile(images, rows=size, cols=size, pad=0)
    img = Image.fromarray(np.round(mosaic * 255).astype(np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()
