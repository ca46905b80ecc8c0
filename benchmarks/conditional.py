"""Make a new example of a class: the conditional VAE against the class-region sampler.

Trains the `digits-cvae` preset and the same model without the class
(`--set model.conditional=false`), each through `vaekit train` (its report writes
`latent.json`), and prints per class how often a 5-NN classifier trained on real digits
recognises 100 samples as their class:

- the conditional model's `vaekit sample RUN --label L` (z from the prior, x from p(x|z, y));
- the conditional model's class-region sampler (`--sampler class:L`);
- the unconditional model's class-region sampler (`--sampler class:L`), the baseline.

    python benchmarks/conditional.py --out runs/cvae-bench
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


def train(out: Path, extra: list[str]) -> dict:
    if not (out / "latent.json").is_file():
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "vaekit", "train", "--preset", "digits-cvae",
                        "--out", str(out), "--quiet", *extra], check=True, stdout=subprocess.DEVNULL)
        print(f"# trained {out} in {time.perf_counter() - start:.0f} s", flush=True)
    latent = json.loads((out / "latent.json").read_text())
    latent["summary"] = json.loads((out / "summary.json").read_text())
    latent["evaluation"] = json.loads((out / "evaluation.json").read_text())
    return latent


def main() -> None:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/cvae-bench")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = Path(args.out)
    seed = ["--seed", str(args.seed)]
    cond = train(out / "conditional", seed)
    plain = train(out / "unconditional", seed + ["--set", "model.conditional=false"])
    print(f"# {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}; vaekit train --preset digits-cvae --seed {args.seed} "
          "[--set model.conditional=false]")
    print(f"{'class':>5}  {'cvae --label':>12}  {'cvae class:L':>12}  {'vae class:L':>11}")
    for name in cond["class_samples"]:
        print(f"{name:>5}  {cond['label_samples'][name]:>12.2f}  {cond['class_samples'][name]:>12.2f}  "
              f"{plain['class_samples'][name]:>11.2f}")
    print(f"{'mean':>5}  {cond['label_samples_mean']:>12.3f}  {cond['class_samples_mean']:>12.3f}  "
          f"{plain['class_samples_mean']:>11.3f}")
    print(f"judge (5-NN on real training digits) accuracy on real test digits: "
          f"{cond['classifier_test_accuracy']:.3f}")
    for what, r in (("conditional", cond), ("unconditional", plain)):
        print(f"{what}: test log p(x) {r['evaluation']['log_px']:.3f}, train time "
              f"{r['summary']['train_seconds']:.1f} s, 5-NN accuracy of the codes {r['knn_accuracy']:.3f}")


if __name__ == "__main__":
    main()
