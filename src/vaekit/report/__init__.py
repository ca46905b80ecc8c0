"""The report of a run: one self-contained ``report.html`` (every image embedded as a data
URI, no script or style fetched from anywhere: it opens offline), plus the figures as PNG
files in ``RUN/figures/`` and the latent numbers in ``RUN/latent.json``.

It shows the configuration, the data, the evaluation table, what the latent space shows as
numbers, every figure with a short reading of it, and for a 2-D latent space of images an
explorer: moving the pointer over the latent plane shows the decoded image at that point,
cut from a precomputed fine grid (no server).

Numbers come from :mod:`vaekit.evaluate` (``evaluation.json`` as ``train``/``evaluate``
wrote it, and :func:`~vaekit.evaluate.latent_metrics`); pictures from :mod:`vaekit.plots`.
This package only arranges them: ``figures`` (the pictures and their readings), ``page``
(the HTML and the latent explorer). Every file is written atomically.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path


from ..checkpoint import atomic_write_bytes, atomic_write_text
from ..data import dataset_for_spec
from ..evaluation import evaluate, latent_metrics
from ..rundir import EVALUATION, check_run_dir, load_run, read_config

log = logging.getLogger(__name__)

from .figures import make_figures
from .page import explorer_html, render_html

REPORT = "report.html"
FIGURES = "figures"
LATENT = "latent.json"


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
