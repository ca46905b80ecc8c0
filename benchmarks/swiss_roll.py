"""Does the swiss-roll demo unroll the roll on every seed? Runs the real command,
`vaekit train --preset swiss-roll --seed S`, for several seeds (at the preset's own thread
setting unless --threads is given), and prints, per seed, the test ELBO and log p(x), the
5-NN Spearman correlation of the roll's coordinate t with its prediction from the 2-D codes
(`latent.json`, written by the report), which restart was kept, and the wall time.

    python benchmarks/swiss_roll.py --seeds 0-9 --jobs 2 --out runs/swiss-bench

A seed counts as unrolled at Spearman >= 0.99. Each run's whole command is timed, report
included; with --jobs 2 two runs share the machine, so their times are those of a busy one.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

UNROLLED = 0.99


def parse_seeds(text: str) -> list[int]:
    seeds: list[int] = []
    for part in text.split(","):
        if "-" in part:
            a, b = part.split("-")
            seeds += list(range(int(a), int(b) + 1))
        else:
            seeds.append(int(part))
    return seeds


def run_seed(seed: int, out: Path, threads: int, extra: list[str]) -> dict:
    run = out / f"seed{seed}"
    cmd = [sys.executable, "-m", "vaekit", "train", "--preset", "swiss-roll", "--seed", str(seed),
           "--out", str(run), "--quiet"] + extra
    if threads:
        cmd += ["--threads", str(threads)]
    start = time.perf_counter()
    if not (run / "latent.json").is_file():  # a finished seed is read again, not retrained
        if run.exists():
            cmd = [sys.executable, "-m", "vaekit", "train", "--resume", str(run), "--quiet"]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    ev = json.loads((run / "evaluation.json").read_text())
    latent = json.loads((run / "latent.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    return {"seed": seed, "elbo": ev["elbo"], "log_px": ev["log_px"],
            "knn": latent["rank_correlation"]["knn"], "kept": summary.get("kept_restart"),
            "restarts": len(summary.get("restarts", [])) or 1, "train_s": summary["train_seconds"],
            "wall_s": wall}


def main() -> None:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0-9", help="e.g. 0-9 or 0,3,5")
    ap.add_argument("--jobs", type=int, default=1, help="runs at the same time")
    ap.add_argument("--threads", type=int, default=0, help="0: the preset's own setting")
    ap.add_argument("--out", default="runs/swiss-bench")
    ap.add_argument("--set", action="append", default=[], help="passed to vaekit train")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    extra = [a for s in args.set for a in ("--set", s)]
    seeds = parse_seeds(args.seeds)
    print(f"# {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, {args.jobs} run(s) at a time, threads "
          f"{args.threads or 'as the preset'}", flush=True)
    print(f"# vaekit train --preset swiss-roll --seed S {' '.join(extra)}".rstrip(), flush=True)
    header = f"{'seed':>4}  {'test ELBO':>9}  {'log p(x)':>9}  {'5-NN Spearman':>13}  {'unrolled':>8}  " \
             f"{'kept restart':>12}  {'train s':>8}  {'wall s':>7}"
    print(header, flush=True)
    rows = []
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for row in pool.map(lambda s: run_seed(s, out, args.threads, extra), seeds):
            rows.append(row)
            kept = "-" if row["kept"] is None else f"{row['kept'] + 1} of {row['restarts']}"
            print(f"{row['seed']:>4}  {row['elbo']:>9.3f}  {row['log_px']:>9.3f}  {row['knn']:>13.5f}  "
                  f"{'yes' if row['knn'] >= UNROLLED else 'NO':>8}  {kept:>12}  {row['train_s']:>8.1f}  "
                  f"{row['wall_s']:>7.1f}", flush=True)
    ok = sum(r["knn"] >= UNROLLED for r in rows)
    elbos = torch.tensor([r["elbo"] for r in rows], dtype=torch.float64)
    spread = f"{float(elbos.mean()):.3f} ± {float(elbos.std()):.3f}" if len(rows) > 1 else f"{float(elbos[0]):.3f}"
    print(f"unrolled (Spearman >= {UNROLLED}): {ok} of {len(rows)} seeds; test ELBO {spread} "
          f"(mean ± sd over seeds)")


if __name__ == "__main__":
    main()
