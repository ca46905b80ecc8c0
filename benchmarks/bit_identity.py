"""Does a change keep runs bit for bit, and what does it do to their time? Train one
`vaekit train` command with two source trees (this checkout and another revision's, e.g. a
`git worktree` of main) and compare every model tensor of the last checkpoint and the test
log p(x); with ``--repeats N`` the two trees take turns N times and the table gives each
one's training and evaluation wall times (the runs' own `summary.json` and
`evaluation.json`) and their ratio, median over the turns.

    git worktree add /tmp/base d7f4a81
    python benchmarks/bit_identity.py --base /tmp/base -- --preset bmnist-vae \\
        --data-dir ../shared/data --epochs 2 --set data.max_train=600 --importance-samples 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from safetensors.torch import load_file

HERE = Path(__file__).resolve().parent.parent / "src"


def train(src: Path, out: Path, args: list[str]) -> None:
    env = dict(os.environ, PYTHONPATH=str(src))
    subprocess.run([sys.executable, "-m", "vaekit", "train", "--quiet", "--no-report", "--out", str(out),
                    *args], check=True, env=env, stdout=subprocess.DEVNULL)


def main() -> None:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="the other checkout (its src/ is used)")
    ap.add_argument("--repeats", type=int, default=1,
                    help="train with each tree this many times, taking turns, and time them")
    ap.add_argument("args", nargs=argparse.REMAINDER, help="-- then the vaekit train arguments")
    a = ap.parse_args()
    args = a.args[1:] if a.args[:1] == ["--"] else a.args
    times = {"base": [], "here": []}  # (training s, evaluation s) per turn
    with tempfile.TemporaryDirectory() as tmp:
        for turn in range(a.repeats):
            for name, src in (("base", Path(a.base) / "src"), ("here", HERE)):
                out = Path(tmp) / f"{name}{turn}"
                train(src, out, args)
                times[name].append((json.loads((out / "summary.json").read_text())["train_seconds"],
                                    json.loads((out / "evaluation.json").read_text())["seconds"]))
        base, here = Path(tmp) / "base0", Path(tmp) / "here0"
        x = load_file(str(base / "checkpoints/latest.safetensors"))
        y = load_file(str(here / "checkpoints/latest.safetensors"))
        keys = [k for k in x if k.startswith("model.")]
        same = all(k in y and bool((x[k] == y[k]).all()) for k in keys)
        lp = [json.loads((d / "evaluation.json").read_text())["log_px"] for d in (base, here)]
    print(f"{' '.join(args)}: model tensors bit-identical: {same} ({len(keys)} tensors); "
          f"test log p(x) {lp[0]!r} (base) {lp[1]!r} (here)")
    if a.repeats > 1:
        print(f"{'tree':<6}{'turn':>5}{'train s':>10}{'eval s':>9}")
        for turn in range(a.repeats):
            for name in ("base", "here"):
                print(f"{name:<6}{turn:>5}{times[name][turn][0]:>10.2f}{times[name][turn][1]:>9.2f}")
        for i, what in enumerate(("train", "eval")):
            ratio = statistics.median(h[i] / b[i] for b, h in zip(times["base"], times["here"]))
            print(f"# {what}: here / base, median over {a.repeats} turns: {ratio:.3f}")


if __name__ == "__main__":
    main()
