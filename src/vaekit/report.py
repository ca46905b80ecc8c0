"""The report of a run: one self-contained ``report.html`` (every image embedded as a data
URI, no script or style fetched from anywhere: it opens offline), plus the figures as PNG
files in ``RUN/figures/`` and the latent numbers in ``RUN/latent.json``.

It shows the configuration, the data, the evaluation table, what the latent space shows as
numbers, every figure with a short reading of it, and for a 2-D latent space of images an
explorer: moving the pointer over the latent plane shows the decoded image at that point,
cut from a precomputed fine grid (no server).

Numbers come from :mod:`vaekit.evaluate` (``evaluation.json`` as ``train``/``evaluate``
wrote it, and :func:`~vaekit.evaluate.latent_metrics`); pictures from :mod:`vaekit.plots`.
This module only arranges them. Every file is written atomically.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import explore, plots
from .checkpoint import atomic_write_bytes, atomic_write_text
from .data import dataset_for_spec
from .evaluation import evaluate, latent_metrics, table_rows
from .runs import CONFIG, EVALUATION, check_run_dir, load_run, read_config

log = logging.getLogger(__name__)

REPORT = "report.html"
FIGURES = "figures"
LATENT = "latent.json"


@dataclass
class Figure:
    name: str  # file stem in RUN/figures/
    title: str
    png: bytes
    reading: str  # a short plain-language reading of the picture


def build_report(run_dir: str | Path, *, data_dir: str | None = None, seed: int = 0,
                 tsne: bool = False, explorer_grid: int = 32,
                 importance_samples: int | None = None) -> Path:
    """Write ``report.html``, ``figures/*.png`` and ``latent.json`` into ``run_dir``.

    The evaluation table is the run's ``evaluation.json``; when the run has none (it was
    interrupted before its end), the test set is evaluated here with ``importance_samples``
    (default: the run's ``eval.importance_samples``) and the result shown, not saved."""
    start = time.perf_counter()
    run_dir = check_run_dir(run_dir)
    model = load_run(run_dir)
    spec = model.data_spec
    data = dataset_for_spec(spec, data_dir)
    evaluation = _evaluation(run_dir, model, data, importance_samples)
    latent = latent_metrics(model, data, seed=seed)
    figures = make_figures(model, data, run_dir, seed=seed, tsne=tsne)
    explorer = explorer_html(model, data, explorer_grid) if (
        model.latent_dim == 2 and spec.image and not model.conditional) else ""
    for fig in figures:
        atomic_write_bytes(run_dir / FIGURES / f"{fig.name}.png", fig.png)
    atomic_write_text(run_dir / LATENT, json.dumps(latent, indent=1))
    page = render_html(run_dir, model, evaluation, latent, figures, explorer)
    atomic_write_text(run_dir / REPORT, page)
    log.info("report written to %s (%.1f s)", run_dir / REPORT, time.perf_counter() - start)
    return run_dir / REPORT


def _evaluation(run_dir: Path, model, data, importance_samples: int | None) -> dict:
    path = run_dir / EVALUATION
    if path.is_file() and importance_samples is None:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            log.warning("%s is damaged; evaluating again", path)
    ev = read_config(run_dir).eval
    return evaluate(model, data.test, importance_samples or ev.importance_samples,
                    chunk_mib=ev.chunk_mib, seed=ev.seed,
                    log_abs_det_jacobian=model.data_spec.log_abs_det_jacobian,
                    labels=data.test_labels if model.conditional else None)


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
    spec = model.data_spec
    labels = data.test_labels
    continuous = labels is not None and labels.is_floating_point()
    lab = _np(labels) if labels is not None else None
    names = spec.class_names
    gen = np.random.default_rng(seed)
    figs: list[Figure] = []

    # 1. prior vs posterior (of the top level, for a hierarchy)
    top = model.top_slice
    test_codes = _np(explore.encode(model, data.test, labels=data.test_labels))[:, top]
    conditional = getattr(model, "conditional", False)
    prior_z = _np(explore.prior_sample(model, min(len(test_codes), 2000), seed))[:, top]
    shown, basis = _two_axes(test_codes)
    prior_shown = _project(prior_z, basis)
    prior_labels = gen.permutation(lab)[:len(prior_z)] if lab is not None else None
    note = " (first two principal axes)" if basis is not None else ""
    png = plots.png_bytes(plots.latent_prior_posterior(prior_shown, prior_labels, shown, lab, names,
                                                       axis_note=note, continuous=continuous))
    reading = ("Left, points drawn from the prior p(z) with labels assigned at random: before "
               "training means anything, the latent plane carries no class structure. Right, the "
               "posterior means of the test data coloured by their true labels. ")
    if lab is not None and not continuous:
        reading += ("Where colours gather into separate regions, the encoder has learned what "
                    "tells the classes apart without ever seeing a label.")
    elif continuous:
        reading += "A smooth colour gradient means the codes follow the label's order."
    if len(model.levels) > 1:
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

    if spec.image:
        # 2. manifold
        if model.latent_dim == 2 and not conditional:
            z1, z2, grid = explore.manifold(model, 20)
            figs.append(Figure(
                "manifold", "The decoded latent manifold",
                plots.png_bytes(plots.manifold(np.clip(_np(grid), 0, 1), z1, z2)),
                "Each cell is the mean of p(x|z) at one point of a 20 x 20 grid laid on the "
                "prior's quantiles (5% to 95% in each coordinate), so the grid covers where the "
                "prior puts its mass. Neighbouring cells decode to similar images; the "
                "transitions show how the model morphs one kind of example into another."))
        # 3. reconstructions
        n = min(20, len(data.test))
        y_test = data.test_labels[:n] if data.test_labels is not None else None
        recon = explore.reconstruct(model, data.test[:n], labels=y_test)
        figs.append(Figure(
            "reconstructions", "Reconstructions",
            plots.png_bytes(plots.reconstructions(_images(model, data.test[:n]), _images(model, recon))),
            "Test images (odd rows) above the means of p(x|z) at their posterior means (even "
            "rows). Blur is the model's uncertainty: the mean of a Bernoulli or Gaussian "
            "likelihood averages over the images the code could stand for."))
        # 4. samples
        z = explore.prior_sample(model, 64, seed)
        classes = torch.arange(64) % model.num_classes if conditional else None  # class i % K
        means = explore.decode_mean(model, z, labels=classes)
        draws = explore.decode_draw(model, z, torch.Generator().manual_seed(seed), labels=classes)
        figs.append(Figure(
            "samples", "Samples from the prior",
            plots.png_bytes(plots.samples(_images(model, means), _images(model, draws))),
            "New images: z drawn from the prior p(z), decoded. Left the means of p(x|z) (what "
            "papers usually show), right one draw from p(x|z) for the same z (what the model "
            "actually generates, pixel noise included). Blurry or mixed digits come from "
            "regions of the prior that no training image's code covers."))
        # 5. interpolations
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
        # 8. samples per class
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
    else:
        # 7. non-image data next to its codes
        x = _np(explore.to_raw(model, data.test))
        figs.append(Figure(
            "data_latent", "Data and latent coordinates",
            plots.png_bytes(plots.data_and_latent(x, shown, lab, continuous, names)),
            "Left the test data (first three features), right their posterior means, both "
            "coloured by label. For the swiss roll, an unrolled latent space shows the colour "
            "(the position along the roll) changing smoothly in one direction."))

    # 6. curves
    rows = _metrics(run_dir)
    if rows:
        figs.append(Figure(
            "curves", "Training curves", plots.png_bytes(plots.training_curves(rows)),
            "Per epoch, on training (one stochastic pass, during warm-up with the KL weighted "
            "by beta < 1 in the loss but not here) and validation data: the ELBO and its two "
            "parts. A validation ELBO that turns down while the training ELBO rises is "
            "over-fitting; the best validation epoch is the model kept."))
    return figs


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
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # a torn last line from a killed process
    return rows


# ---------------------------------------------------------------------- explorer


def explorer_html(model, data, size: int = 32) -> str:
    """The interactive latent explorer: the test codes on the latent plane, and under the
    pointer the decoded mean of p(x|z) from a size x size grid precomputed here."""
    codes = _np(explore.encode(model, data.test))
    lim = float(max(3.0, np.percentile(np.abs(codes), 99.5) * 1.05))
    labels = data.test_labels
    continuous = labels is not None and labels.is_floating_point()
    background = plots.latent_background(codes, _np(labels) if labels is not None else None, lim,
                                         continuous=continuous)
    grid = np.clip(_np(explore.plane_grid(model, lim, size)), 0, 1)
    c, h, w = grid.shape[1:]
    sprite = plots.sprite_png(grid, size)
    return f"""
<section id="explorer-section">
<h2>Latent explorer</h2>
<p class="reading">Move the pointer over the latent plane (the test codes, coloured by label):
the image on the right is the mean of p(x|z) decoded at that point z, from a precomputed
{size} x {size} grid over [&minus;{lim:.2f}, {lim:.2f}]&sup2;.</p>
<div class="explorer">
  <img id="plane" src="{_data_uri(background)}" width="400" height="400" alt="latent plane">
  <div><canvas id="decoded" width="{w * 8}" height="{h * 8}"></canvas>
  <p id="zread">z = (&middot;, &middot;)</p></div>
</div>
<img id="sprite" src="{_data_uri(sprite)}" alt="decoded grid" hidden>
<script>
(function () {{
  const G = {size}, W = {w}, H = {h}, LIM = {lim!r};
  const plane = document.getElementById("plane"), sprite = document.getElementById("sprite");
  const canvas = document.getElementById("decoded"), out = document.getElementById("zread");
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  function show(fx, fy) {{
    fx = Math.min(1, Math.max(0, fx)); fy = Math.min(1, Math.max(0, fy));
    const col = Math.round(fx * (G - 1)), row = Math.round(fy * (G - 1));
    const z1 = -LIM + 2 * LIM * fx, z2 = LIM - 2 * LIM * fy;
    ctx.drawImage(sprite, col * W, row * H, W, H, 0, 0, canvas.width, canvas.height);
    out.textContent = "z = (" + z1.toFixed(2) + ", " + z2.toFixed(2) + ")";
    plane.dataset.cell = String(row * G + col);
  }}
  plane.addEventListener("pointermove", function (e) {{
    const r = plane.getBoundingClientRect();
    show((e.clientX - r.left) / r.width, (e.clientY - r.top) / r.height);
  }});
  function first() {{ show(0.5, 0.5); }}
  if (sprite.complete) first(); else sprite.addEventListener("load", first);
}})();
</script>
</section>"""


# -------------------------------------------------------------------------- page


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _latent_rows(latent: dict) -> list[tuple[str, str]]:
    rows = []
    if "knn_accuracy" in latent:
        rows.append(("5-NN accuracy on the posterior means (train codes -> test codes)",
                     f"{latent['knn_accuracy']:.3f}"))
    if "class_samples" in latent and latent["class_samples"]:
        rows.append(("class:LABEL samples recognised as their class (mean over classes)",
                     f"{latent['class_samples_mean']:.3f}"))
        labelled = latent.get("label_samples") or {}
        if labelled:
            rows.append(("samples of p(x|z, y) (`--label`) recognised as their class (mean)",
                         f"{latent['label_samples_mean']:.3f}"))
        for name, rate in latent["class_samples"].items():
            both = f"{rate:.2f}" + (f" (p(x|z, y): {labelled[name]:.2f})" if name in labelled else "")
            rows.append((f"&nbsp;&nbsp;class {html.escape(str(name))}", both))
        rows.append(("the judging 5-NN classifier's accuracy on real test data",
                     f"{latent['classifier_test_accuracy']:.3f}"))
    if "rank_correlation" in latent:
        rc = latent["rank_correlation"]
        if "knn" in rc:
            rows.append(("Spearman rank correlation of the manifold coordinate with its 5-NN "
                         "prediction from the codes (a smooth order, straight or curved)",
                         f"{rc['knn']:.3f}"))
        rows.append(("Spearman rank correlation, codes vs manifold coordinate (best straight direction)",
                     f"{rc['best_direction']:.3f}"))
        rows.append(("&nbsp;&nbsp;per latent dimension",
                     ", ".join(f"{v:.3f}" for v in rc["per_dimension"])))
    return rows


def _table(rows: list[tuple[str, str]], escape: bool = True) -> str:
    cells = "".join(f"<tr><td>{html.escape(a) if escape else a}</td><td>{html.escape(b)}</td></tr>"
                    for a, b in rows)
    return f"<table>{cells}</table>"


def _training_line(run_dir: Path) -> str:
    path = run_dir / "summary.json"
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    procs = summary.get("world_size", 1)
    line = (f" Trained {summary['epochs']} epochs (the kept model is epoch {summary['best_epoch']}, "
            f"the best on validation) in {summary['train_seconds']:.0f} s"
            f"{f' on {procs} processes' if procs > 1 else ''}"
            f"{', stopped early' if summary.get('stopped_early') else ''}.")
    restarts = summary.get("restarts")
    if restarts:
        values = ", ".join(f"{r['best_valid_objective']:.3f}" for r in restarts)
        line += (f" It began as {len(restarts)} restarts (fresh initialisations) of "
                 f"{restarts[0]['epochs']} epochs each, with validation objectives {values}; "
                 f"restart {summary['kept_restart'] + 1} of {len(restarts)}, the best, was kept "
                 "and trained on.")
    return line


def render_html(run_dir: Path, model, evaluation: dict, latent: dict, figures: list[Figure],
                explorer: str) -> str:
    from . import __version__

    spec = model.data_spec
    config_text = (run_dir / CONFIG).read_text(encoding="utf-8")
    data_rows = [("name", spec.name), ("source", spec.source), ("example shape", "x".join(map(str, spec.shape))),
                 ("split sizes", ", ".join(f"{k} {v}" for k, v in spec.sizes.items())),
                 ("likelihood", spec.likelihood), ("binarisation", spec.binarize),
                 ("scaling", spec.scaling + (f" (log-Jacobian {spec.log_abs_det_jacobian:.3f} "
                                             "added to every log-density)" if spec.scale else "")),
                 ("classes", ", ".join(spec.class_names) if spec.class_names else "none")]
    latent_rows = _latent_rows(latent)
    latent_block = (f"<h2>What the latent space shows</h2>{_table(latent_rows, escape=False)}"
                    if latent_rows else "")
    figure_blocks = "\n".join(
        f'<section class="figure" id="fig-{f.name}"><h3>{html.escape(f.title)}</h3>'
        f'<img src="{_data_uri(f.png)}" alt="{html.escape(f.title)}">'
        f'<p class="reading">{html.escape(f.reading)}</p></section>' for f in figures)
    k = evaluation.get("importance_samples")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>vaekit report: {html.escape(run_dir.name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
td {{ padding: 0.2em 1em 0.2em 0; border-bottom: 1px solid #eee; font-variant-numeric: tabular-nums; }}
pre {{ background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }}
.figure img {{ max-width: 100%; }}
.reading {{ color: #444; max-width: 70em; }}
.explorer {{ display: flex; gap: 2em; align-items: flex-start; }}
#plane {{ cursor: crosshair; border: 1px solid #ccc; }}
#decoded {{ border: 1px solid #ccc; image-rendering: pixelated; width: 224px; height: 224px; }}
</style></head><body>
<h1>vaekit report: {html.escape(run_dir.name)}</h1>
<p>Run directory <code>{html.escape(str(run_dir))}</code>; written {time.strftime('%Y-%m-%d %H:%M')}
by vaekit {__version__} with torch {torch.__version__}.{_training_line(run_dir)}</p>
<h2>Evaluation on the test set</h2>
{_table(table_rows(evaluation))}
<p class="reading">Per-example means in nats. The ELBO is the training objective, a lower bound on
log p(x); log p(x) is estimated by importance sampling with K = {k} samples from q(z|x)
(Burda et al. 2016), &plusmn; its standard error over test examples; the gap is how far the
bound sits below it. A latent unit is active when the variance of its posterior mean
across test examples exceeds 0.01.</p>
{latent_block}
{explorer}
<h2>Figures</h2>
{figure_blocks}
<h2>Data</h2>
{_table(data_rows)}
<h2>Configuration</h2>
<pre>{html.escape(config_text)}</pre>
</body></html>
"""


# ------------------------------------------------------------------ mixture fits


def gmm_report(data: str, components: int, *, covariance_type: str = "full", max_iter: int = 200,
               tol: float = 1e-6, n_init: int = 1, reg_covar: float = 1e-6, seed: int = 0,
               data_dir: str | None = None, out: str | Path | None = None) -> dict:
    """Fit a Gaussian mixture by EM to the points in ``data`` and draw the fit and the
    log-likelihood per iteration into ``out`` (``mixture_fit.png``,
    ``log_likelihood.png``). Returns the numbers (history, BIC, AIC) and the figure paths."""
    from .data import Where, data_dir_from, read_points
    from .mixture import GaussianMixture

    x, labels = read_points(data, Where(data_dir_from(data_dir), seed))
    gm = GaussianMixture(components, covariance_type=covariance_type, max_iter=max_iter, tol=tol,
                         n_init=n_init, reg_covar=reg_covar, random_state=seed).fit(x)
    folder = Path(out) if out else Path(f"{Path(data).stem}-gmm")
    weights, means = _np(gm.weights_), _np(gm.means_)
    covs = _np(gm.covariances_)
    color = None
    if labels is not None and np.issubdtype(np.asarray(labels).dtype, np.number):
        color = np.asarray(labels, dtype=np.float64)
    shown = x if x.shape[1] <= 2 else x[:, :2]
    fit_png = plots.png_bytes(plots.mixture_fit(shown, weights, means, covs, covariance_type, color))
    ll_png = plots.png_bytes(plots.log_likelihood_history(gm.log_likelihood_history_))
    paths = [folder / "mixture_fit.png", folder / "log_likelihood.png"]
    atomic_write_bytes(paths[0], fit_png)
    atomic_write_bytes(paths[1], ll_png)
    return {"n": len(x), "d": x.shape[1], "history": list(gm.log_likelihood_history_),
            "converged": bool(gm.converged_), "n_iter": int(gm.n_iter_), "bic": gm.bic(x),
            "aic": gm.aic(x), "figures": [str(p) for p in paths], "model": gm}
