"""The report's HTML page: tables, figures as data URIs, the latent explorer."""

from __future__ import annotations

import base64
import html
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from .. import explore, plots
from ..evaluation import table_rows
from ..rundir import CONFIG

log = logging.getLogger(__name__)

from .figures import Figure, _np


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


def _ood_reading(d: dict) -> str:
    """What the out-of-distribution figure shows, read from this run's own AUROCs: the
    corrected score is recommended only where it does better than the raw likelihood."""
    text = ("log p(x) and the input-complexity score S(x) = -log p(x) - L(x) on the test set "
            "and on the other data: likelihoods can rate simpler data from elsewhere higher "
            "than the data the model was trained on, and subtracting the data's compressed "
            "length L(x) is meant to correct for that.")
    if "auroc_log_px" not in d:
        return text
    raw, corrected = d["auroc_log_px"], d["auroc_ood_score"]
    if corrected > raw:
        return text + (f" Here it does: AUROC {corrected:.3f} by S(x) against {raw:.3f} by log "
                       "p(x), so S(x) is the score to tell these data apart.")
    return text + (f" Here it does not: AUROC {corrected:.3f} by S(x) against {raw:.3f} by log "
                   "p(x). For this model and these data the raw likelihood is the better score; "
                   "the correction's compressed length moves the two sets less than the model's "
                   "own likelihood does.")


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
            f"{'the last: it trained on the validation split too' if summary.get('refit') else 'the best on validation'})"
            f" in {summary['train_seconds']:.0f} s"
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
    from .. import __version__

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
{_diagnosis_block(run_dir)}
<h2>Data</h2>
{_table(data_rows)}
<h2>Configuration</h2>
<pre>{html.escape(config_text)}</pre>
</body></html>
"""


def _diagnosis_block(run_dir: Path) -> str:
    """The section "What this model gets wrong", from ``vaekit diagnose`` (diagnose.json and
    figures/diagnose_*.png), when it has been run."""
    path = run_dir / "diagnose.json"
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ('<h2>What this model gets wrong</h2><p class="reading">Not measured yet: '
                f'<code>vaekit diagnose {html.escape(str(run_dir))}</code> measures posterior '
                "collapse, the inference gaps, holes in the prior, blur and, with --ood, how "
                "the likelihood rates other data; then run <code>vaekit report</code> again.</p>")
    units = d["kl_per_unit"]
    rows = [
        ("active units; KL per unit (min, max)",
         f"{d['active_units']} / {len(units)}; {min(units):.3f}, {max(units):.3f}"),
        ("E_x KL(q(z|x) || p(z)) = I_q(x; z) + KL(q(z) || p(z))",
         f"{d['average_kl']:.3f} = {d['mutual_information']:.3f} + {d['marginal_kl']:.3f} "
         f"(log N = {d['log_n']:.2f}, N = {d['surgery_examples']})"),
        ("gap log p(x) - ELBO = amortization + approximation",
         f"{d['gap']:.3f} = {d['amortization_gap']:.3f} ± {d['amortization_gap_se']:.3f} + "
         f"{d['approximation_gap']:.3f} ± {d['approximation_gap_se']:.3f} ({d['examples']} examples)"),
        ("prior mass where the aggregate posterior is low (0.01: no holes)", f"{d['prior_hole_mass']:.3f}"),
    ]
    if "judge_confidence_prior" in d:
        rows.append(("classifier's confidence on samples: prior, ex-post mixture",
                     f"{d['judge_confidence_prior']:.3f}, {d.get('judge_confidence_gmm', float('nan')):.3f}"))
    if "sharpness" in d:
        rows.append(("mean gradient magnitude: " + ", ".join(k.replace("_", " ") for k in d["sharpness"]),
                     ", ".join(f"{v:.4f}" for v in d["sharpness"].values())))
    if "ood" in d:
        rows.append((f"AUROC, test set against {d['ood']['data']}: by log p(x), by S(x)",
                     f"{d['auroc_log_px']:.3f}, {d['auroc_ood_score']:.3f}"))
    readings = {
        "diagnose_prior_vs_gmm": "Decoded draws from the prior p(z) (top) beside draws from a "
        "Gaussian mixture fitted to the training codes (bottom): where the aggregate posterior "
        "leaves holes in the prior, prior draws decode to mixtures of kinds, which is why "
        "sampling near the codes of one kind (`--sampler class:LABEL`) makes better examples.",
        "diagnose_blur": "Data, reconstructions (means of p(x|z)), and samples as means and as "
        "draws: the means average over every image a code could stand for, so they are smoother "
        "than data (lower mean gradient magnitude); the draws add pixel noise instead.",
        "diagnose_ood": _ood_reading(d),
    }
    pictures = ""
    for name, reading in readings.items():
        png = run_dir / "figures" / f"{name}.png"
        if png.is_file():
            pictures += (f'<section class="figure"><img src="{_data_uri(png.read_bytes())}" '
                         f'alt="{name}"><p class="reading">{html.escape(reading)}</p></section>')
    return ("<h2>What this model gets wrong</h2>" + _table(rows) +
            '<p class="reading">From <code>vaekit diagnose</code>, in nats. Active units and KL '
            "per unit show posterior collapse (units whose KL is near 0 carry no information "
            "about x). The ELBO surgery splits the average KL into the information the codes "
            "carry about x and how far the aggregate posterior sits from the prior. The "
            "amortization gap is what an encoder shared by all examples loses against an "
            "optimum found for each example; the approximation gap is what the Gaussian family "
            "itself loses.</p>" + pictures)
