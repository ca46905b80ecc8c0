"""The fast preset against the plain one, side by side: training time and test NLL over seeds.

For each seed, every preset is trained at the same time, one CPU thread each, by vaekit's own
command (`vaekit train --preset P --seed S --threads 1`), which ends with the preset's own
evaluation (K = 5000 importance samples on the full test set). The table gives each run's
training time (the training loop's wall time from `summary.json`, without the final
evaluation) and its test NLL, then per preset the mean and standard deviation over seeds,
and the ratio of training times measured side by side (same seed, same time, same machine).

    python benchmarks/speedrun.py --data-dir ../shared/data --out runs/speedrun --seeds 0,1,2

`--reuse` takes a run directory that already holds `summary.json` and a K = 5000
`evaluation.json` instead of training it again (seeds can so be run by several invocations
and tabled together). A pair counts as trained side by side when both runs started within
a minute of each other (their `config.toml`, written when training starts); the time ratio
is computed over those pairs only, and the table marks the others.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

import torch

import vaekit
from likelihood import TARGETS  # benchmarks/likelihood.py: the test-NLL targets

RATIO_TARGET = 1 / 3  # bmnist-fast's training time over bmnist-vae's


def run_dir(out: Path, preset: str, seed: int) -> Path:
    return out / f"{preset}-s{seed}"


def finished(run: Path, k: int) -> bool:
    ev = run / "evaluation.json"
    return (run / "summary.json").exists() and ev.exists() and json.loads(
        ev.read_text()).get("importance_samples") == k


def train_side_by_side(presets: list[str], seed: int, out: Path, data_dir: str | None,
                       log: Path) -> None:
    """Start every preset's training at once (one thread each); wait for all."""
    procs = {}
    for preset in presets:
        cmd = [sys.executable, "-m", "vaekit", "train", "--preset", preset, "--seed", str(seed),
               "--threads", "1", "--out", str(run_dir(out, preset, seed)), "--quiet", "--no-report"]
        if data_dir:
            cmd += ["--data-dir", data_dir]
        print("$", " ".join(cmd), file=sys.stderr, flush=True)
        with open(log, "a") as fh:
            procs[preset] = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
    for preset, proc in procs.items():
        if proc.wait() != 0:
            sys.exit(f"error: {preset} seed {seed} failed (exit {proc.returncode}); see {log}")


TOGETHER_S = 60  # runs started this close together trained side by side


def started(run: Path) -> float:
    """When training started: `vaekit train` writes config.toml before the first epoch."""
    return (run / "config.toml").stat().st_mtime


def row(run: Path, preset: str, seed: int, side_by_side: bool) -> dict:
    summary = json.loads((run / "summary.json").read_text())
    ev = json.loads((run / "evaluation.json").read_text())
    return {"preset": preset, "seed": seed, "run": str(run), "train_s": summary["train_seconds"],
            "epochs": summary["epochs"], "best_epoch": summary["best_epoch"],
            "nll": -ev["log_px"], "stderr": ev["log_px_stderr"], "elbo": ev["elbo"],
            "eval_s": ev["seconds"], "side_by_side": side_by_side}


def mean_sd(values: list[float], digits: int = 2) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f} (one seed)"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def main():
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", default="bmnist-vae,bmnist-fast",
                    help="comma-separated; the first is the reference of the time ratio")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    ap.add_argument("--out", required=True, help="folder for the run directories (PRESET-sSEED)")
    ap.add_argument("--data-dir", help="where the datasets are (else $VAEKIT_DATA_DIR)")
    ap.add_argument("-k", "--importance-samples", type=int, default=5000,
                    help="the K of the presets' own evaluation that a reused run must have")
    ap.add_argument("--reuse", action="store_true",
                    help="take finished run directories instead of training them again")
    ap.add_argument("--json", help="also write the rows to this JSON file")
    args = ap.parse_args()
    presets = [p for p in args.presets.split(",") if p]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    rows = []
    for seed in seeds:
        todo = [p for p in presets
                if not (args.reuse and finished(run_dir(out, p, seed), args.importance_samples))]
        if args.reuse:
            for p in presets:
                if p in todo and run_dir(out, p, seed).exists():
                    sys.exit(f"error: {run_dir(out, p, seed)} exists but is not finished; "
                             "finish it with `vaekit train --resume` or remove it")
        elif any(run_dir(out, p, seed).exists() for p in presets):
            sys.exit(f"error: run directories for seed {seed} exist under {out}; "
                     "give --reuse to take them, or another --out")
        if todo:
            train_side_by_side(todo, seed, out, args.data_dir, out / "speedrun.log")
        starts = [started(run_dir(out, p, seed)) for p in presets]
        together = max(starts) - min(starts) <= TOGETHER_S
        rows += [row(run_dir(out, p, seed), p, seed, together) for p in presets]

    cpu = platform.processor() or platform.machine()
    print(f"# speedrun: {', '.join(presets)}, seeds {args.seeds}, trained side by side, one CPU "
          f"thread each; test NLL with K = {args.importance_samples}, full test set; "
          f"vaekit {vaekit.__version__}, torch {torch.__version__}, {os.cpu_count()} CPUs ({cpu})")
    print(f"{'preset':<14}{'seed':>5}{'epochs':>10}{'train s':>9}{'NLL':>9}{'±':>6}{'ELBO':>10}"
          f"{'eval s':>8}  side by side")
    for r in rows:
        print(f"{r['preset']:<14}{r['seed']:>5}{r['best_epoch']:>5}/{r['epochs']:<4}{r['train_s']:>9.0f}"
              f"{r['nll']:>9.2f}{r['stderr']:>6.2f}{r['elbo']:>10.3f}{r['eval_s']:>8.0f}  "
              f"{'yes' if r['side_by_side'] else 'no (started apart)'}")
    print(f"\n{'preset':<14}{'test NLL, mean ± sd':>26}{'train s, mean ± sd':>24}  target")
    for p in presets:
        mine = [r for r in rows if r["preset"] == p]
        nll = [r["nll"] for r in mine]
        target = TARGETS.get(p)
        verdict = (f"<= {target}: {'met' if statistics.mean(nll) <= target else 'MISSED'}"
                   if target else "-")
        print(f"{p:<14}{mean_sd(nll):>26}{mean_sd([r['train_s'] for r in mine], 0):>24}  {verdict}")
    ref = presets[0]
    for p in presets[1:]:
        ratios = []
        for seed in seeds:
            pair = {r["preset"]: r for r in rows if r["seed"] == seed and r["preset"] in (ref, p)}
            if pair[ref]["side_by_side"] and pair[p]["side_by_side"]:
                ratios.append(pair[p]["train_s"] / pair[ref]["train_s"])
        if ratios:
            shown = ", ".join(f"{x:.3f}" for x in ratios)
            verdict = ("met" if statistics.mean(ratios) <= RATIO_TARGET else "MISSED")
            print(f"\n# training time {p} / {ref}, pairs trained side by side: {shown}; mean "
                  f"{statistics.mean(ratios):.3f} (target <= {RATIO_TARGET:.3f}: {verdict})")
        else:
            print(f"\n# training time {p} / {ref}: no pair was trained side by side")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
