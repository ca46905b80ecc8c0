"""Test log-likelihoods next to the published ones: train a preset (or take finished runs),
evaluate on the full test set (or the validation set, to choose between runs) with K
importance samples (5000 by default), print a table.

    # train a preset, then evaluate it
    python benchmarks/likelihood.py --preset bmnist-vae --data-dir ../shared/data --out runs/bmnist-vae
    # evaluate runs that already exist (the numbers in benchmarks/RESULTS.md)
    python benchmarks/likelihood.py --run runs/bmnist-vae --run runs/fmnist-vae --data-dir ../shared/data
    # keep the estimates in the runs (--save), then compare them image by image without evaluating again
    python benchmarks/likelihood.py --run runs/a --data-dir ../shared/data --save
    python benchmarks/likelihood.py --run runs/a --run runs/b --data-dir ../shared/data --reuse
    # choose between runs on the validation set, image by image (the test set stays unseen)
    python benchmarks/likelihood.py --run runs/a --run runs/b --data-dir ../shared/data --split valid -k 1000

The evaluation is vaekit's own (`vaekit.evaluate_run`, what `vaekit evaluate RUN -k 5000`
runs), with its fixed seed; its wall time is printed too. NLL = -log p(x) in nats per
example, lower is better.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

import vaekit
from vaekit.errors import VaekitError
from vaekit.rundir import check_run_dir, evaluate_run, read_config, read_evaluation, saved_log_px

# (data, model, NLL, note, source) from the papers; the targets of issue 7 below them.
PUBLISHED = [
    ("static binarized MNIST", "VAE, 1 stochastic layer, MLP 200-200 tanh, z = 50, 3280 epochs", 88.71, "",
     "Burda et al. 2016, table 3"),
    ("static binarized MNIST", "VAE, MLP 784-400-40, 500 epochs (Pythae)", 89.78, "K = 200",
     "Pythae reproducibility table"),
    ("static binarized MNIST", "IWAE K = 50, two stochastic layers", 85.32, "", "Burda et al. 2016"),
    ("static binarized MNIST", "VampPrior, gated MLP 2x300, z = 40", 85.57, "", "Tomczak & Welling 2018"),
    ("static binarized MNIST", "two-layer hierarchical VAE + VampPrior", 83.19, "", "Tomczak & Welling 2018"),
    ("Fashion-MNIST, dynamic", "VAE", 228.70, "", "Norouzi et al. 2020 (Exemplar VAE)"),
    ("Fashion-MNIST, dynamic", "convolutional HVAE", 225.38, "", "Norouzi et al. 2020 (Exemplar VAE)"),
    ("Fashion-MNIST, dynamic", "HVAE + VampPrior", 226.72, "", "Norouzi et al. 2020 (Exemplar VAE)"),
    ("Fashion-MNIST, dynamic", "convolutional HVAE + VampPrior", 224.67, "", "Norouzi et al. 2020 (Exemplar VAE)"),
]
TARGETS = {"bmnist-vae": 88.5, "bmnist-best": 85.0, "fmnist-vae": 228.0, "fmnist-best": 225.0,
           "bmnist-fast": 88.5, "bmnist-hvae": 83.0, "fmnist-hvae": 226.5}


def train(preset: str, data_dir: str | None, out: str, threads: int) -> None:
    """``vaekit train --preset``; ``threads`` 0 keeps the preset's own (the likelihood presets
    pin one thread, so the run repeats the one in RESULTS.md bit for bit)."""
    cmd = [sys.executable, "-m", "vaekit", "train", "--preset", preset, "--out", out, "--quiet",
           "--no-report"]
    if threads:
        cmd += ["--set", f"train.threads={threads}"]
    if data_dir:
        cmd += ["--data-dir", data_dir]
    print("$", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True)


def paired_differences(rows: list[dict]) -> list[tuple[str, str, float, float]]:
    """(run, first run, mean difference, its standard error) of log p(x), example by example,
    for each run after the first with per-example values on the same data and test set: the
    comparison that says whether one run beats another on these images (the estimate's own ±
    over images mostly measures how the images differ, and cancels here)."""
    out, first = [], {}
    for r in rows:
        values = r.pop("per_example")
        if values is None:
            continue
        key = (r["data"], r["n_test"], r["k"])
        if key not in first:
            first[key] = (Path(r["run"]).name, values)
            continue
        base, ref = first[key]
        d = values - ref
        se = float(d.std(ddof=1) / len(d) ** 0.5) if len(d) > 1 else float("nan")
        out.append((Path(r["run"]).name, base, float(d.mean()), se))
    return out


def decoder_flops(run) -> int:
    """Floating-point operations of one decoder pass for one latent sample (torch's
    FlopCounterMode: the matrix products and convolutions) of a run directory or a model."""
    from torch.utils.flop_counter import FlopCounterMode

    from vaekit.rundir import load_run

    model = load_run(run) if isinstance(run, (str, Path)) else run
    z = torch.zeros(1, model.decoder_input)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.decoder(z)
    return int(counter.get_total_flops())


def eval_parts(run: Path, data_dir: str | None, samples: int, threads: int, repeats: int = 3) -> dict:
    """Where one chunk of a run's evaluation goes on its test set (see :func:`chunk_parts`)."""
    from vaekit.data import dataset_for_spec
    from vaekit.rundir import load_run

    model = load_run(run)
    return chunk_parts(model, dataset_for_spec(model.data_spec, data_dir).test, samples, threads,
                       repeats)


def chunk_parts(model, x: torch.Tensor, samples: int, threads: int, repeats: int = 3) -> dict:
    """Where one chunk of the evaluation's work goes: the three terms of
    log w = log p(x|z) + log p(z) - log q(z|x) (objectives.log_weights) and the draw of z,
    timed separately (best of ``repeats``) with their FLOPs (FlopCounterMode), on the batch
    and chunk sizes the evaluation itself uses (evaluation.plan_chunks) for the images ``x``."""
    from torch.utils.flop_counter import FlopCounterMode

    from vaekit.evaluation import auto_chunk_mib, plan_chunks
    from vaekit.objectives import reparameterize

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = model.eval()
        x = model.shaped(x) if hasattr(model, "shaped") else x
        batch, chunk = plan_chunks(model, x, samples, auto_chunk_mib(torch.device("cpu")))
        xb = x[:batch]
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            posterior, prior = model.encode(xb), model.prior
            eps = torch.randn((chunk, len(xb), *model.noise_shape), generator=gen)
            drawn = {}

            def draw():  # the terms below take the latest draw, as the evaluation does
                drawn["z"] = reparameterize(posterior, chunk, eps)

            parts = {"draw z": draw,
                     "log p(x|z)": lambda: model.decode(drawn["z"]).log_prob(xb),
                     "log p(z)": lambda: prior.log_prob(drawn["z"]),
                     "log q(z|x)": lambda: posterior.log_prob(drawn["z"])}
            out = {}
            for name, fn in parts.items():
                fn()  # warm up
                seconds = min(_timed(fn) for _ in range(repeats))
                with FlopCounterMode(display=False) as counter:
                    fn()
                out[name] = (seconds, counter.get_total_flops())
    finally:
        torch.set_num_threads(old)
    return {"batch": len(xb), "chunk": chunk, "parts": out}


def matmul_peak(threads: int, size: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of a float32 size x size matrix product with ``threads`` threads (best of
    ``repeats``): the reference the evaluation's achieved rate is compared with."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(size, size), torch.randn(size, size)
        torch.mm(a, b)  # warm up
        best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    finally:
        torch.set_num_threads(old)
    return 2 * size ** 3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", action="append", default=[], help="a finished run directory (repeatable)")
    ap.add_argument("--preset", help="train this preset first (into --out)")
    ap.add_argument("--out", help="run directory for --preset")
    ap.add_argument("--data-dir", help="where the datasets are (else $VAEKIT_DATA_DIR)")
    ap.add_argument("-k", "--importance-samples", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=0,
                    help="torch CPU threads (0: the preset's own for training, torch's default "
                         "for evaluating)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--split", choices=("test", "valid"), default="test",
                    help="evaluate on the validation set instead, to choose between runs without "
                         "looking at the test set")
    ap.add_argument("--json", help="also write the rows to this JSON file")
    ap.add_argument("--parts", action="store_true",
                    help="also time the terms of log w on one chunk of each run (where the "
                         "evaluation's time goes), with the evaluation's own threads")
    ap.add_argument("--reuse", action="store_true",
                    help="take a saved evaluation with the same K and split instead of "
                         "evaluating again: the run's own (evaluation.json, what `train` wrote) "
                         "or an earlier --save's")
    ap.add_argument("--save", action="store_true",
                    help="write each fresh evaluation into its run (RUN/evaluations/, named by "
                         "its settings, with each image's estimate), as `vaekit evaluate RUN -k K` "
                         "does, so that a later --reuse pairs it image by image with other runs")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    runs = list(args.run)
    if args.preset:
        if not args.out:
            ap.error("--preset needs --out RUN_DIR")
        train(args.preset, args.data_dir, args.out, args.threads)
        runs.append(args.out)
    if not runs:
        ap.error("give --run RUN or --preset NAME --out RUN")

    rows = []
    for run in runs:
        run = check_run_dir(run)
        summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").exists() else {}
        cfg = read_config(run)
        start = time.perf_counter()
        # the run's own result where it has this K, else an earlier --save of this K and split
        saved = read_evaluation(run, args.split, args.importance_samples) if args.reuse else None
        if saved is not None:
            ev, reused = saved, True
            per_example = saved_log_px(run, saved)  # None for a run evaluated before they were kept
        else:
            ev, reused = evaluate_run(run, args.importance_samples, data_dir=args.data_dir,
                                      split=args.split, device=args.device, save=args.save,
                                      per_example=True), False
            per_example = ev.pop("log_px_per_example")
        rows.append({
            "run": str(run), "data": cfg.data.name, "prior": cfg.model.prior,
            "train_samples": cfg.train.importance_samples, "elbo": ev["elbo"], "log_px": ev["log_px"],
            "stderr": ev["log_px_stderr"], "nll": -ev["log_px"], "gap": ev["gap"],
            "active": f"{ev['active_units']}/{ev['latent_dim']}", "n_test": ev["n_test"],
            "k": ev["importance_samples"], "epochs": summary.get("epochs"),
            "best_epoch": summary.get("best_epoch"), "train_s": summary.get("train_seconds"),
            # a resumed evaluation's own wall time counts its interrupted parts
            "eval_s": round(ev["seconds"] if reused or ev.get("resumed_from") else
                            time.perf_counter() - start, 1),
            "eval_threads": ev.get("threads"), "reused": reused, "split": args.split,
            "per_example": per_example,
        })
        # the decoder's achieved rate: its FLOPs for K samples of every test example over
        # the evaluation's wall time (everything else, encoder and prior, counted as overhead)
        flops = decoder_flops(run) * ev["importance_samples"] * ev["n_test"]
        rows[-1]["decoder_gflops"] = flops / max(ev["seconds"], 1e-9) / 1e9

    cpu = platform.processor() or platform.machine()
    split = {"test": "test", "valid": "validation"}[args.split]
    print(f"# {split} log-likelihood, K = {args.importance_samples} importance samples, full {split} "
          f"sets; "
          f"vaekit {vaekit.__version__}, torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"{args.device} ({cpu})")
    peaks = {t: matmul_peak(t) for t in {r["eval_threads"] for r in rows if r["eval_threads"]}}
    head = (f"{'run':<28}{'data':<17}{'ELBO':>10}{'log p(x)':>11}{'±':>6}{'NLL':>9}{'gap':>7}"
            f"{'active':>8}{'epochs':>11}{'train s':>9}{'eval s':>8}{'thr':>4}{'dec GFLOP/s':>12}"
            f"{'peak':>7}")
    print(head)
    for r in rows:
        epochs = f"{r['best_epoch']}/{r['epochs']}" if r["epochs"] else "-"
        train_s = f"{r['train_s']:.0f}" if r["train_s"] else "-"
        threads = r["eval_threads"]
        peak = f"{peaks[threads]:>7.0f}" if threads else f"{'-':>7}"
        print(f"{Path(r['run']).name[:27]:<28}{r['data'][:16]:<17}{r['elbo']:>10.3f}{r['log_px']:>11.3f}"
              f"{r['stderr']:>6.2f}{r['nll']:>9.2f}{r['gap']:>7.2f}{r['active']:>8}{epochs:>11}"
              f"{train_s:>9}{r['eval_s']:>8.0f}{threads or '-':>4}{r['decoder_gflops']:>12.1f}{peak}"
              f"{'  (evaluation.json)' if r['reused'] else ''}")
    print("# dec GFLOP/s: the decoder's FLOPs (torch's FlopCounterMode) for K samples of every test "
          "example over the evaluation's wall time; peak: a 2048 x 2048 float32 matrix product "
          "with the same threads (a run evaluated before threads were recorded shows '-')")
    paired = paired_differences(rows)
    if paired:
        print(f"\n# paired: each run's log p(x) minus the first run's on the same {split} images, "
              "example by example\n# (the mean difference ± its standard error, the same K and eps "
              "seed; the ± above is one run's\n# own estimate over the images, which mostly "
              "measures how the images differ and cancels here)")
        print(f"{'run':<28}{'minus':<28}{'Δ log p(x)':>11}{'±':>7}{'Δ/±':>7}")
        for name, base, diff, se in paired:
            ratio = f"{diff / se:>7.1f}" if se > 0 else f"{'-':>7}"  # a run against itself: 0
            print(f"{name[:27]:<28}{base[:27]:<28}{diff:>+11.3f}{se:>7.3f}{ratio}")
    if args.parts:
        print("\n# where the evaluation's time goes: one chunk (the evaluation's batch x samples per "
              "chunk), each term of log w timed alone (best of 3) with its FLOPs")
        print(f"{'run':<28}{'part':<12}{'ms':>9}{'share':>7}{'GFLOP':>8}{'GFLOP/s':>9}")
        for r in rows:
            threads = r["eval_threads"] or torch.get_num_threads()
            prof = eval_parts(Path(r["run"]), args.data_dir, r["k"], threads)
            total = sum(sec for sec, _ in prof["parts"].values())
            for name, (sec, flops) in prof["parts"].items():
                print(f"{Path(r['run']).name[:27]:<28}{name:<12}{sec * 1e3:>9.1f}{sec / total:>7.0%}"
                      f"{flops / 1e9:>8.2f}{flops / sec / 1e9:>9.1f}")
            print(f"{'':<28}{'(chunk)':<12}{total * 1e3:>9.1f}{'':>7}  {prof['batch']} images x "
                  f"{prof['chunk']} samples, {threads} thread(s)")
    if args.split == "test":  # validation numbers are for choosing, not for these tables
        print("\n# published test NLL (nats)")
        for data, model, nll, note, source in PUBLISHED:
            print(f"{data:<24}{model:<64}{nll:>8.2f} {note:<8}{source}")
        print("\n# targets: " + ", ".join(f"{k} <= {v}" for k, v in TARGETS.items()))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    try:
        main()
    except VaekitError as e:  # bad input: one line, exit status 2, as the CLI
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted; the same command continues an evaluation from its last batch of "
              "images (its progress is kept in the run)", file=sys.stderr)
        sys.exit(130)
