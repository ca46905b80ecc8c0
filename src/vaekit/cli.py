"""The ``vaekit`` command: the only place that reads argv, sets up logging and maps errors
to exit codes (a user's mistake: one ``error: ...`` line on stderr and exit status 2)."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from . import __version__

log = logging.getLogger("vaekit")

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse that reports mistakes as one ``error:`` line (no usage dump), exit 2."""

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
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--latent-dim", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="cpu, cuda, mps or auto")
    p.add_argument("--likelihood", help="auto, bernoulli, gaussian or gaussian-learned")
    p.add_argument("--prior", help="normal, diag-normal, mixture or vamp")
    p.add_argument("--importance-samples", type=int,
                   help="K for the final log p(x) estimate (default: eval.importance_samples)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate a trained run on its test set")
    p.add_argument("run_dir")
    p.add_argument("--importance-samples", "-k", type=int, default=1000,
                   help="importance samples K for log p(x) (default 1000)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--data-dir", help="where the run's data files are now, if they moved")
    p.add_argument("--split", choices=("test", "valid"), default="test")
    p.add_argument("--chunk-mib", type=int, default=256, help="memory bound of one chunk")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--device", default="cpu")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vaekit", description="Variational auto-encoders: train, evaluate, explore.")
    parser.add_argument("--version", action="version", version=f"vaekit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _add_train(sub)
    _add_evaluate(sub)
    p = sub.add_parser("datasets", help="list the built-in datasets and whether they are present")
    p.add_argument("--data-dir")
    sub.add_parser("presets", help="list the named configurations")
    return parser


def _overrides(args) -> list[dict]:
    from .config import parse_override

    flags = {
        ("data", "name"): args.data, ("data", "data_dir"): args.data_dir,
        ("train", "epochs"): args.epochs, ("train", "batch_size"): args.batch_size,
        ("train", "lr"): args.lr, ("model", "latent_dim"): args.latent_dim,
        ("train", "seed"): args.seed, ("train", "device"): args.device,
        ("model", "likelihood"): args.likelihood, ("model", "prior"): args.prior,
    }
    updates = [parse_override(s) for s in args.set]
    for (section, key), value in flags.items():
        if value is not None:
            updates.append({section: {key: value}})
    if args.quiet:
        updates.append({"train": {"progress": False}})
    return updates


def cmd_train(args) -> int:
    from . import config as config_mod
    from .runs import resume_config, train_and_evaluate

    overrides = _overrides(args)
    if args.resume:
        if args.preset or args.config:
            raise config_mod.ConfigError("--resume takes the run's own config; use --set or "
                                         "flags to change e.g. --epochs")
        cfg = resume_config(args.resume, overrides)
    else:
        cfg = config_mod.resolve(args.preset, args.config, overrides)
    if args.quiet:
        logging.getLogger("vaekit").setLevel(logging.WARNING)
    summary = train_and_evaluate(cfg, args.out if not args.resume else args.resume,
                                 resume=bool(args.resume), evaluate_samples=args.importance_samples)
    run = summary["run_dir"]
    if summary["interrupted"]:
        print(f"interrupted after {summary['steps']} steps; state saved. Continue with: "
              f"vaekit train --resume {run}", file=sys.stderr)
        return EXIT_INTERRUPTED
    ev = summary["evaluation"]
    print(f"run: {run}")
    print(f"epochs: {summary['epochs']} (best {summary['best_epoch']}), "
          f"train time {summary['train_seconds']:.1f} s")
    print(_table(ev))
    return 0


def _table(ev: dict) -> str:
    rows = [
        ("test ELBO", f"{ev['elbo']:.3f}"),
        ("  reconstruction E_q log p(x|z)", f"{ev['reconstruction']:.3f}"),
        ("  KL(q(z|x) || p(z))", f"{ev['kl']:.3f}"),
        (f"log p(x) (K = {ev['importance_samples']})", f"{ev['log_px']:.3f} ± {ev['log_px_stderr']:.3f}"),
        ("gap log p(x) - ELBO", f"{ev['gap']:.3f}"),
        ("active units", f"{ev['active_units']} / {ev['latent_dim']}"),
        ("test examples", f"{ev['n_test']}"),
    ]
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows) + "\n(nats per example)"


def cmd_evaluate(args) -> int:
    from .runs import evaluate_run

    if args.importance_samples < 1:
        raise ValueError(f"--importance-samples must be at least 1, got {args.importance_samples}")
    result = evaluate_run(args.run_dir, args.importance_samples, data_dir=args.data_dir,
                          split=args.split, chunk_mib=args.chunk_mib, seed=args.seed,
                          device=args.device)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"run: {args.run_dir} ({args.split} set, {result['seconds']:.1f} s)")
        print(_table(result))
    return 0


def cmd_datasets(args) -> int:
    from .data import data_dir_from, describe_sources

    rows = describe_sources(data_dir_from(args.data_dir))
    cols = ("name", "size", "shape", "labels", "present", "origin")
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols}
    print("  ".join(c.upper().ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(r[c].ljust(widths[c]) for c in cols))
    print("\nOr give a path: a .npy/.npz array or a .csv of numbers (--data PATH).")
    return 0


def cmd_presets(args) -> int:
    from .config import preset_description, preset_names

    for name in preset_names():
        print(f"{name:<22} {preset_description(name)}")
    return 0


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "datasets": cmd_datasets,
            "presets": cmd_presets}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    from .errors import VaekitError

    try:
        return COMMANDS[args.command](args)
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
