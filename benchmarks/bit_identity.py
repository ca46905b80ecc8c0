"""Does a change keep runs bit for bit? Train one `vaekit train` command with two source
trees (this checkout and another revision's, e.g. a `git worktree` of main) and compare
every model tensor of the last checkpoint and the test log p(x).

    git worktree add /tmp/base d7f4a81
    python benchmarks/bit_identity.py --base /tmp/base -- --preset bmnist-vae \\
        --data-dir ../shared/data --epochs 2 --set data.max_train=600 --importance-samples 5
"""

from __future__ import annotations

import argparse
import json
import os
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
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="the other checkout (its src/ is used)")
    ap.add_argument("args", nargs=argparse.REMAINDER, help="-- then the vaekit train arguments")
    a = ap.parse_args()
    args = a.args[1:] if a.args[:1] == ["--"] else a.args
    with tempfile.TemporaryDirectory() as tmp:
        base, here = Path(tmp) / "base", Path(tmp) / "here"
        train(Path(a.base) / "src", base, args)
        train(HERE, here, args)
        x = load_file(str(base / "checkpoints/latest.safetensors"))
        y = load_file(str(here / "checkpoints/latest.safetensors"))
        keys = [k for k in x if k.startswith("model.")]
        same = all(k in y and bool((x[k] == y[k]).all()) for k in keys)
        lp = [json.loads((d / "evaluation.json").read_text())["log_px"] for d in (base, here)]
    print(f"{' '.join(args)}: model tensors bit-identical: {same} ({len(keys)} tensors); "
          f"test log p(x) {lp[0]!r} (base) {lp[1]!r} (here)")


if __name__ == "__main__":
    main()
