"""What each run gets wrong, one row per run: `vaekit diagnose` on finished runs.

    python benchmarks/diagnose.py --run runs/fm30 --run runs/first --ood default --data-dir ../shared/data

Prints active units, the ELBO surgery (I_q and the marginal KL, with log N), the inference
gaps (amortization + approximation = gap, with standard errors), the prior mass where the
aggregate posterior is low, and with --ood the AUROCs by log p(x) and by the corrected score.
Each run's numbers are also in RUN/diagnose.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", action="append", required=True, help="a finished run (repeatable)")
    ap.add_argument("--ood", help="other data for the AUROCs (a built-in name or a file)")
    ap.add_argument("--data-dir")
    ap.add_argument("--examples", type=int, default=200)
    args = ap.parse_args()
    print(f"# {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}; vaekit diagnose RUN --examples {args.examples}"
          + (f" --ood {args.ood}" if args.ood else ""))
    print(f"{'run':<28} {'active':>7} {'I_q':>7} {'log N':>6} {'marg KL':>8} {'amort.':>14} "
          f"{'approx.':>14} {'gap':>7} {'holes':>6} {'AUROC lp':>8} {'AUROC S':>8} {'sec':>6}")
    for run in args.run:
        cmd = [sys.executable, "-m", "vaekit", "diagnose", run, "--examples", str(args.examples), "--json"]
        if args.ood:
            cmd += ["--ood", args.ood]
        if args.data_dir:
            cmd += ["--data-dir", args.data_dir]
        start = time.perf_counter()
        d = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        sec = time.perf_counter() - start
        au = (f"{d['auroc_log_px']:>8.3f} {d['auroc_ood_score']:>8.3f}" if "auroc_log_px" in d
              else f"{'-':>8} {'-':>8}")
        print(f"{run[-28:]:<28} {d['active_units']:>3}/{len(d['kl_per_unit']):<3} "
              f"{d['mutual_information']:>7.3f} {d['log_n']:>6.2f} {d['marginal_kl']:>8.3f} "
              f"{d['amortization_gap']:>7.3f}±{d['amortization_gap_se']:<6.3f} "
              f"{d['approximation_gap']:>7.3f}±{d['approximation_gap_se']:<6.3f} {d['gap']:>7.3f} "
              f"{d['prior_hole_mass']:>6.3f} {au} {sec:>6.0f}", flush=True)


if __name__ == "__main__":
    main()
