"""The ``vaekit`` command: the only place that reads argv, sets up logging and maps errors
to exit codes (a user's mistake: one ``error: ...`` line on stderr and exit status 2)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings

from . import __version__

log = logging.getLogger("vaekit")

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse that reports mistakes as one ``error:`` line (no usage dump), exit 2, and
    takes options only as spelt in full: prefix matching would turn a mistyped or missing
    option (``--dat``, or ``--data`` where a command has only ``--data-dir``) into another."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):  # noqa: D401 - argparse's name
        self.exit(EXIT_USAGE, f"error: {message} (see `{self.prog} --help`)\n")


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a VAE and evaluate it on the test set")
    p.add_argument("--data", help="built-in dataset name (see `vaekit datasets`) or a path")
    p.add_argument("--data-dir", help="folder with a built-in dataset's files (else $VAEKIT_DATA_DIR)")
    p.add_argument("--out", help="run directory to create (default: runs/TIMESTAMP-DATA)")
    p.add_argument("--preset", help="a named configuration (see `vaekit presets`)")
    p.add_argument("--config", help="a TOML file of settings")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one setting, e.g. --set model.latent_dim=2 (repeatable)")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue a run (with --out NEW: continue a copy in NEW, RUN_DIR "
                        "unchanged)")
    p.add_argument("--from", dest="start", choices=("latest", "best"),
                   help="with --resume RUN_DIR --out NEW: the checkpoint NEW continues from "
                        "(default latest; best, e.g. to anneal from the best epoch)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--latent-dim", type=_latent_dim, metavar="L[,L2,...]",
                   help="latent size, or level sizes from the data up for a hierarchical "
                        "VAE (e.g. 40,40)")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="cpu, cuda, mps or auto")
    p.add_argument("--threads", type=int, help="CPU threads for torch (train.threads; 0 = torch's default)")
    from .registry import LIKELIHOODS, PRIORS

    p.add_argument("--likelihood", help=f"auto (the data's advice) or {LIKELIHOODS.describe()}")
    p.add_argument("--prior", help=PRIORS.describe())
    p.add_argument("--importance-samples", "-k", type=int,
                   help="K for the final log p(x) estimate (eval.importance_samples, recorded "
                        "in the run's config)")
    p.add_argument("--download", action="store_true",
                   help="download a built-in dataset's missing files into the cache (data.download)")
    p.add_argument("--tensorboard", action="store_true",
                   help="write scalars and sample images to RUN/tensorboard (needs tensorboard)")
    p.add_argument("--no-report", action="store_true",
                   help="do not write RUN/report.html at the end (report.enabled = false)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")


def _latent_dim(text: str):
    """``16`` -> 16; ``40,40`` -> [40, 40] (model.latent_dim's two forms)."""
    try:
        sizes = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer or a comma-separated "
                                         "list of integers (e.g. 16 or 40,40)") from None
    return sizes[0] if len(sizes) == 1 else sizes


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate a trained run on its test set")
    p.add_argument("run_dir")
    p.add_argument("--importance-samples", "-k", type=int,
                   help="importance samples K for log p(x) (default: the run's "
                        "eval.importance_samples, what its own result used)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--data-dir", help="where the run's data files are now, if they moved")
    p.add_argument("--split", choices=("test", "valid"), default="test")
    p.add_argument("--chunk-mib", type=int,
                   help="memory bound of one chunk of importance samples (default: the run's "
                        "eval.chunk_mib; 0: sized to the device)")
    p.add_argument("--seed", type=int, help="seed of the importance samples (default: the run's "
                                            "eval.seed)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--update", action="store_true",
                   help="make this the run's own result (evaluation.json, and its settings the "
                        "run's [eval]); without it the result goes to RUN/evaluations/, named "
                        "by its settings, and the run's own result is left as it is")


def _run_arg(p, data: bool = True) -> None:
    p.add_argument("run_dir", metavar="RUN", help="a run directory written by `vaekit train`")
    p.add_argument("--data-dir", help="where the run's data files are now, if they moved")
    if data:
        p.add_argument("--data", help="other data for the model (a built-in name or a file) "
                                      "instead of the run's test split")


def _add_explore(sub) -> None:
    p = sub.add_parser("sample", help="generate new examples from a trained run")
    _run_arg(p, data=False)
    p.add_argument("-n", type=int, default=64, help="how many (default 64)")
    p.add_argument("--sampler", default="prior",
                   help="prior (default), gmm (a mixture fitted to the training codes) or "
                        "class:LABEL (a mixture fitted to one class's codes)")
    p.add_argument("--label", help="a conditional run: draw examples of this class (a name or "
                                   "an index) from p(x|z, y), z from the prior")
    p.add_argument("--draw", action="store_true", help="draw x ~ p(x|z) instead of its mean")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="a .png grid (images), .npy, .npz or .csv (default RUN/samples.png "
                                 "or RUN/samples.npy)")

    p = sub.add_parser("reconstruct", help="reconstruct examples through the model")
    _run_arg(p)
    p.add_argument("-n", type=int, default=20, help="how many examples (default 20; 0 = all)")
    p.add_argument("--out", help="a .png (originals above reconstructions), .npy, .npz or .csv "
                                 "(default RUN/reconstructions.png or .npy)")

    p = sub.add_parser("encode", help="write the latent codes of data")
    _run_arg(p)
    p.add_argument("--split", choices=("train", "valid", "test"), default="test",
                   help="which split of the run's data (default test)")
    p.add_argument("--stochastic", action="store_true",
                   help="one draw z ~ q(z|x) per example instead of the posterior mean")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="codes.npy, codes.npz (codes and labels) or codes.csv "
                                 "(a label column when there are labels); default RUN/codes.npz")

    p = sub.add_parser("interpolate", help="decode the straight line between two examples' codes")
    _run_arg(p)
    p.add_argument("--from", dest="start", type=int, required=True, help="index of the first example")
    p.add_argument("--to", dest="end", type=int, required=True, help="index of the second example")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--out", help="a .png row or .npy (default RUN/interpolation-I-J.png or .npy)")

    p = sub.add_parser("report", help="write RUN/report.html: figures, numbers, latent explorer")
    _run_arg(p, data=False)
    p.add_argument("--tsne", action="store_true", help="add a t-SNE picture of the codes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--importance-samples", "-k", type=int,
                   help="evaluate anew with K samples instead of reading evaluation.json")
    p.add_argument("--explorer-grid", type=int, default=32, help="explorer cells per side")

    p = sub.add_parser("gmm", help="fit a Gaussian mixture by EM to data or to codes")
    p.add_argument("data", metavar="DATA_OR_CODES",
                   help="a .npy/.npz/.csv file (e.g. codes from `vaekit encode`) or a built-in dataset")
    p.add_argument("--components", "-k", type=int, required=True, help="number of components K")
    p.add_argument("--covariance-type", choices=("full", "diag"), default="full")
    p.add_argument("--max-iter", type=int, default=200)
    p.add_argument("--tol", type=float, default=1e-6, help="stop when the mean log-likelihood "
                                                           "rises by less (default 1e-6)")
    p.add_argument("--n-init", type=int, default=1)
    p.add_argument("--reg-covar", type=float, default=1e-6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir")
    p.add_argument("--out", help="folder for the figures (default: DATA's name + '-gmm')")


def _add_diagnose(sub) -> None:
    p = sub.add_parser("diagnose", help="measure what the model gets wrong: collapse, inference "
                                        "gaps, prior holes, blur, out-of-distribution data")
    _run_arg(p, data=False)
    p.add_argument("--examples", type=int, default=200,
                   help="test examples for the inference gaps (per-example optimisation; default 200)")
    p.add_argument("--ood", metavar="NAME|PATH", help="other data (a built-in name or a file): "
                   "AUROC of telling the run's test set from it, by log p(x) and by S(x)")
    p.add_argument("--importance-samples", "-k", type=int, default=1000,
                   help="samples for the ELBOs and log p(x) of the gaps (default 1000)")
    p.add_argument("--ood-samples", type=int, default=100,
                   help="importance samples for log p(x) with --ood (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = sub.add_parser("score", help="per-example log p(x), bits per dimension and an "
                                     "out-of-distribution score")
    _run_arg(p)
    p.add_argument("--split", choices=("train", "valid", "test"), default="test")
    p.add_argument("--importance-samples", "-k", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="scores.csv or scores.npy (columns log_px, bits_per_dim, ood_score)")
    p.add_argument("--json", action="store_true", help="print one JSON object (the columns as lists)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vaekit", description="Variational auto-encoders: train, evaluate, explore.")
    parser.add_argument("--version", action="version", version=f"vaekit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _add_train(sub)
    _add_evaluate(sub)
    _add_explore(sub)
    _add_diagnose(sub)
    p = sub.add_parser("datasets", help="list the built-in datasets and whether they are present")
    p.add_argument("--data-dir")
    p = sub.add_parser("download", help="download a built-in dataset's files into the cache, verified")
    p.add_argument("name", help="mnist, fashion-mnist or binarized-mnist")
    p.add_argument("--mirror", default="", help="another base URL to fetch the files from")
    sub.add_parser("presets", help="list the named configurations")
    return parser


def _overrides(args) -> list[dict]:
    from .config import parse_override

    flags = {
        ("data", "name"): args.data, ("data", "data_dir"): args.data_dir,
        ("train", "epochs"): args.epochs, ("train", "batch_size"): args.batch_size,
        ("train", "lr"): args.lr, ("model", "latent_dim"): args.latent_dim,
        ("train", "seed"): args.seed, ("train", "device"): args.device,
        ("train", "threads"): args.threads,
        ("model", "likelihood"): args.likelihood, ("model", "prior"): args.prior,
        ("eval", "importance_samples"): args.importance_samples,
    }
    updates = [parse_override(s) for s in args.set]
    for (section, key), value in flags.items():
        if value is not None:
            updates.append({section: {key: value}})
    if args.quiet:
        updates.append({"train": {"progress": False}})
    if args.no_report:
        updates.append({"report": {"enabled": False}})
    if args.download:
        updates.append({"data": {"download": True}})
    if args.tensorboard:
        updates.append({"train": {"tensorboard": True}})
    return updates


def cmd_train(args) -> int:
    from . import config as config_mod
    from .evaluation import format_table
    from . import distributed
    from .rundir import evaluation_progress
    from .runs import check_device, fork_run, resume_config, train_and_evaluate

    overrides = _overrides(args)
    if args.resume:
        if args.preset or args.config:
            raise config_mod.ConfigError("--resume takes the run's own config; use --set or "
                                         "flags to change e.g. --epochs")
        cfg = resume_config(args.resume, overrides, branch=bool(args.out))
    else:
        if args.start:
            raise config_mod.ConfigError("--from chooses the checkpoint of a run to continue: "
                                         "give it with --resume RUN_DIR --out NEW")
        cfg = config_mod.resolve(args.preset, args.config, overrides)
    cfg = config_mod.cap_epochs(cfg, os.environ.get(config_mod.MAX_EPOCHS_ENV))
    if args.quiet:
        logging.getLogger("vaekit").setLevel(logging.WARNING)
    run_dir = args.resume or args.out
    if args.resume and args.out:  # a fork: the config and device are checked before the copy
        if distributed.from_env().distributed:
            raise config_mod.ConfigError("--resume RUN_DIR --out NEW copies a run in one "
                                         "process: fork it without torchrun, or resume "
                                         "RUN_DIR itself")
        check_device(cfg)
        run_dir, cfg = fork_run(args.resume, args.out, args.start or "latest", cfg)
    elif args.start == "best":
        raise config_mod.ConfigError(f"--from best needs --out NEW: continuing {args.resume} "
                                     "itself from its best checkpoint would overwrite the "
                                     "epochs after it")
    try:
        summary = train_and_evaluate(cfg, run_dir, resume=bool(args.resume))
    except KeyboardInterrupt:  # Ctrl-C in training is the trainer's; this is in the evaluation
        if run_dir and evaluation_progress(run_dir).exists():
            print(f"interrupted during the test evaluation; training is done and the evaluation's "
                  f"progress is kept. Continue with: vaekit train --resume {run_dir}", file=sys.stderr)
            return EXIT_INTERRUPTED
        raise
    run = summary["run_dir"]
    if summary.get("rank", 0) != 0:
        return EXIT_INTERRUPTED if summary["interrupted"] else 0  # rank 0 reports
    if summary["interrupted"]:
        print(f"interrupted after {summary['steps']} steps; state saved. Continue with: "
              f"vaekit train --resume {run}", file=sys.stderr)
        return EXIT_INTERRUPTED
    ev = summary["evaluation"]
    print(f"run: {run}")
    print(f"epochs: {summary['epochs']} (best {summary['best_epoch']}), "
          f"train time {summary['train_seconds']:.1f} s")
    print(format_table(ev))
    if "report" in summary:
        print(f"report: {summary['report']}")
    return 0


def cmd_evaluate(args) -> int:
    from .evaluation import format_table
    from .rundir import eval_settings, evaluate_run, evaluation_name, evaluation_progress, read_config

    if args.importance_samples is not None and args.importance_samples < 1:
        raise ValueError(f"--importance-samples must be at least 1, got {args.importance_samples}")
    try:
        result = evaluate_run(args.run_dir, args.importance_samples, data_dir=args.data_dir,
                              split=args.split, chunk_mib=args.chunk_mib, seed=args.seed,
                              device=args.device, update=args.update, progress=True)
    except KeyboardInterrupt:
        name = evaluation_name(args.split, *eval_settings(read_config(args.run_dir),
                                                          args.importance_samples, args.seed,
                                                          args.chunk_mib))
        kept = evaluation_progress(args.run_dir, args.split, name)
        print("interrupted" + (f"; the evaluation's progress is kept in {kept}: run the same "
                               "command again to continue" if kept.exists() else ""), file=sys.stderr)
        return EXIT_INTERRUPTED
    if args.json:
        print(json.dumps(result))
    else:
        print(f"run: {args.run_dir} ({args.split} set, {result['seconds']:.1f} s)")
        print(format_table(result))
        print(f"written to {result['saved_as']}" + (
            "" if args.update else " (the run's own result, evaluation.json, is unchanged; "
                                   "--update replaces it)"))
    return 0


def cmd_datasets(args) -> int:
    from .data import data_dir_from, describe_sources

    rows = describe_sources(data_dir_from(args.data_dir))
    cols = ("name", "size", "shape", "labels", "present", "origin")
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols}
    print("  ".join(c.upper().ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(r[c].ljust(widths[c]) for c in cols))
    from .download import cache_dir

    print(f"\nDownloads go to {cache_dir()} ($VAEKIT_CACHE_DIR): `vaekit download NAME`.")
    print("Or give a path (--data PATH): a folder of PNG/JPEG images (one sub-folder per class "
          "for labels), a .npy/.npz array, or a .csv of numbers.")
    return 0


def cmd_download(args) -> int:
    from .data import download_source

    print(download_source(args.name, args.mirror))
    return 0


def cmd_presets(args) -> int:
    from .config import preset_description, preset_names

    for name in preset_names():
        print(f"{name:<22} {preset_description(name)}")
    return 0


def _inputs(args, model):
    from .explore import run_split, user_inputs

    if getattr(args, "data", None):
        return user_inputs(model, args.data, args.data_dir)
    return run_split(model, getattr(args, "split", "test"), args.data_dir)


def _default_out(args, stem: str, image: bool) -> str:
    from pathlib import Path

    return str(Path(args.run_dir) / f"{stem}.{'png' if image else 'npy'}")


def cmd_sample(args) -> int:
    from .explore import grid_columns, sample, write_output
    from .rundir import load_run

    model = load_run(args.run_dir)
    image = bool(model.data_spec.image)
    out = args.out or _default_out(args, "samples", image)
    _check_out(out)
    x, _ = sample(model, args.n, args.sampler, seed=args.seed, data_dir=args.data_dir, draw=args.draw,
                  label=args.label)
    print(write_output(out, x, image=image, cols=grid_columns(len(x))))
    return 0


def cmd_reconstruct(args) -> int:
    from . import plots
    from .checkpoint import atomic_write_bytes
    from .explore import reconstruct, to_raw, write_output
    from .rundir import load_run

    model = load_run(args.run_dir)
    image = bool(model.data_spec.image)
    out = args.out or _default_out(args, "reconstructions", image)
    _check_out(out)
    if args.n < 0:
        raise ValueError(f"-n must be 0 (all) or positive, got {args.n}")
    inputs = _inputs(args, model)
    x = inputs.x[:args.n] if args.n else inputs.x
    y = inputs.labels[:len(x)] if inputs.labels is not None else None
    recon = to_raw(model, reconstruct(model, x, labels=y))
    if out.lower().endswith(".png") and image:
        fig = plots.reconstructions(to_raw(model, x).clamp(0, 1).numpy(), recon.clamp(0, 1).numpy())
        atomic_write_bytes(out, plots.png_bytes(fig))
        print(out)
    else:
        print(write_output(out, recon, image=image))
    return 0


def cmd_encode(args) -> int:
    import torch

    from .explore import code_names, encode, write_output
    from .rundir import load_run

    model = load_run(args.run_dir)
    out = args.out or os.path.join(args.run_dir, "codes.npz")
    _check_out(out)
    if out.lower().endswith(".png"):
        raise ValueError(f"{out}: codes are arrays; write .npy, .npz or .csv")
    inputs = _inputs(args, model)
    codes = encode(model, inputs.x, stochastic=args.stochastic,
                   generator=torch.Generator().manual_seed(args.seed), labels=inputs.labels)
    if model.hierarchical:
        sizes = ", ".join(f"z{i + 1}: {n}" for i, n in enumerate(model.levels))
        log.info("codes of all %d levels, concatenated from the data up (%s): %s", len(model.levels),
                 sizes, "one draw from q(z|x) each, top level first" if args.stochastic else
                 "the ancestral posterior means (the top level's mean, then each lower level's "
                 "mean given the means above)")
    print(write_output(out, codes, labels=inputs.labels, columns=code_names(model)))
    return 0


def cmd_interpolate(args) -> int:
    from .explore import interpolate, to_raw, write_output
    from .rundir import load_run

    model = load_run(args.run_dir)
    image = bool(model.data_spec.image)
    out = args.out or _default_out(args, f"interpolation-{args.start}-{args.end}", image)
    _check_out(out)
    inputs = _inputs(args, model)
    n = len(inputs.x)
    for name, i in (("--from", args.start), ("--to", args.end)):
        if not 0 <= i < n:
            raise ValueError(f"{name} {i} is not an example index of {inputs.source}, which has "
                             f"{n} examples (0 to {n - 1})")
    y = inputs.labels
    path = interpolate(model, inputs.x[[args.start]], inputs.x[[args.end]], args.steps,
                       ya=y[[args.start]] if y is not None else None,
                       yb=y[[args.end]] if y is not None else None)[0]
    print(write_output(out, to_raw(model, path), image=image, cols=args.steps))
    return 0


def cmd_report(args) -> int:
    from .report import build_report

    if args.importance_samples is not None and args.importance_samples < 1:
        raise ValueError(f"--importance-samples must be at least 1, got {args.importance_samples}")
    if not 2 <= args.explorer_grid <= 128:
        raise ValueError(f"--explorer-grid must be between 2 and 128, got {args.explorer_grid}")
    print(build_report(args.run_dir, data_dir=args.data_dir, seed=args.seed, tsne=args.tsne,
                       explorer_grid=args.explorer_grid, importance_samples=args.importance_samples))
    return 0


def cmd_gmm(args) -> int:
    from .gmm import gmm_report

    result = gmm_report(args.data, args.components, covariance_type=args.covariance_type,
                      max_iter=args.max_iter, tol=args.tol, n_init=args.n_init,
                      reg_covar=args.reg_covar, seed=args.seed, data_dir=args.data_dir,
                      out=args.out)
    print(f"# EM for a {args.components}-component Gaussian mixture ({args.covariance_type} "
          f"covariance) on {result['n']} points of dimension {result['d']}")
    print(f"{'iteration':>9}  {'mean log-likelihood':>20}  {'change':>12}")
    prev = None
    for i, ll in enumerate(result["history"], 1):
        change = "" if prev is None else f"{ll - prev:+.3e}"
        print(f"{i:>9}  {ll:>20.6f}  {change:>12}")
        prev = ll
    print(f"converged: {'yes' if result['converged'] else 'no'} after {result['n_iter']} iterations")
    print(f"BIC {result['bic']:.2f}   AIC {result['aic']:.2f}   (lower is better)")
    for path in result["figures"]:
        print(path)
    return 0


def _check_out(out: str) -> None:
    from pathlib import Path

    from .errors import VaekitError

    suffix = Path(out).suffix.lower()
    if suffix not in (".png", ".npy", ".npz", ".csv"):
        raise VaekitError(f"--out {out}: unknown output type {suffix or '(none)'!r}; use .png, "
                          ".npy, .npz or .csv")
    if Path(out).is_dir():
        raise VaekitError(f"--out {out} is a folder; give a file name")


def cmd_diagnose(args) -> int:
    from .diagnose import diagnose_run

    result = diagnose_run(args.run_dir, examples=args.examples, ood=args.ood, data_dir=args.data_dir,
                          importance_samples=args.importance_samples, ood_samples=args.ood_samples,
                          seed=args.seed, progress=not args.json)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"run: {args.run_dir} ({result['test_examples']} test examples)")
    units = result["kl_per_unit"]
    print(f"posterior collapse   active units {result['active_units']} / {len(units)}; KL per unit "
          f"(nats) min {min(units):.3f}, max {max(units):.3f}")
    for lv in result.get("levels", []):
        print(f"  level {lv['level']}: active {lv['active_units']} / {lv['size']}, "
              f"sum of unit KLs {lv['kl_per_unit_sum']:.3f}")
    print(f"ELBO surgery         E_x KL {result['average_kl']:.3f} = I_q(x; z) "
          f"{result['mutual_information']:.3f} (log N = {result['log_n']:.3f}) + KL(q(z) || p(z)) "
          f"{result['marginal_kl']:.3f}   [{result['surgery_examples']} examples]")
    print(f"inference gaps       gap {result['gap']:.3f} ± {result['gap_se']:.3f} = amortization "
          f"{result['amortization_gap']:.3f} ± {result['amortization_gap_se']:.3f} + approximation "
          f"{result['approximation_gap']:.3f} ± {result['approximation_gap_se']:.3f}   "
          f"[{result['examples']} examples]")
    print(f"prior holes          prior mass where q(z) is low: {result['prior_hole_mass']:.3f} "
          "(0.01 if none)" + (f"; judge confidence, prior samples {result['judge_confidence_prior']:.3f}"
                               if "judge_confidence_prior" in result else "")
          + (f", ex-post mixture samples {result['judge_confidence_gmm']:.3f}"
             if "judge_confidence_gmm" in result else ""))
    if "sharpness" in result:
        sh = result["sharpness"]
        print("blur                 mean gradient magnitude: " + ", ".join(
            f"{k.replace('_', ' ')} {v:.4f}" for k, v in sh.items()))
    if "ood" in result:
        print(f"out of distribution  {result['ood']['data']}: AUROC by log p(x) "
              f"{result['auroc_log_px']:.3f}, by S(x) = -log p(x) - L(x) {result['auroc_ood_score']:.3f}"
              f"   (mean log p(x): test {result['ood']['log_px_test']:.2f}, other "
              f"{result['ood']['log_px_other']:.2f})")
    print(f"(nats; written to {args.run_dir}/diagnose.json; `vaekit report` adds a section)")
    return 0


def cmd_score(args) -> int:
    import numpy as np

    from .diagnose import scores
    from .errors import VaekitError
    from .explore import write_output
    from .rundir import load_run

    if args.importance_samples < 1:
        raise VaekitError(f"--importance-samples must be at least 1, got {args.importance_samples}")
    model = load_run(args.run_dir)
    out = args.out
    if out:
        _check_out(out)
        if out.lower().endswith((".png", ".npz")):
            raise VaekitError(f"--out {out}: scores are a table; write .csv or .npy")
    inputs = _inputs(args, model)
    if len(inputs.x) == 0:
        raise VaekitError(f"{inputs.source} has no examples to score")
    result = scores(model, inputs.x, inputs.labels if model.conditional else None,
                    args.importance_samples, args.seed)
    columns = ("log_px", "bits_per_dim", "ood_score")
    table = np.stack([result[c] for c in columns], 1)
    if out:
        print(write_output(out, table, columns=list(columns)))
    if args.json or not out:
        print(json.dumps({"data": inputs.source, "examples": len(table),
                          "importance_samples": args.importance_samples,
                          **{c: [round(float(v), 6) for v in result[c]] for c in columns}}))
    return 0


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "datasets": cmd_datasets,
            "presets": cmd_presets, "sample": cmd_sample, "reconstruct": cmd_reconstruct,
            "encode": cmd_encode, "interpolate": cmd_interpolate, "report": cmd_report,
            "gmm": cmd_gmm, "download": cmd_download, "diagnose": cmd_diagnose, "score": cmd_score}


def _finish(args, code: int) -> int:
    """Under torchrun, leave without the interpreter's exit-time destructors: PyTorch's
    process-group objects can abort there ("terminate called without an active
    exception") after a run that finished and wrote everything. Files are written and
    fsynced already; the streams are flushed here."""
    from .distributed import from_env

    if args.command == "train" and from_env().distributed:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    """Library warnings (e.g. EM's ConvergenceWarning) as one ``warning:`` line."""
    print(f"warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    # under torchrun only rank 0 speaks; the others report warnings and errors
    quiet_rank = os.environ.get("RANK", "0") not in ("", "0")
    logging.basicConfig(level=logging.WARNING if quiet_rank else logging.INFO,
                        format="%(message)s", stream=sys.stderr)
    warnings.showwarning = _one_line_warning
    from .errors import VaekitError

    try:
        return _finish(args, COMMANDS[args.command](args))
    except VaekitError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as e:  # bad argument values caught by library checks
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `vaekit evaluate RUN --json | head`
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
