"""Peak memory of evaluation: log p(x) with K importance samples on a run's test set.

Each measurement runs in a fresh child process and reports its peak resident set size
(``ru_maxrss``): a baseline child that only loads the run and its data, then the
evaluation itself (what `vaekit evaluate RUN -k K` does). Target for binarized MNIST,
K = 5000 on the 10,000 test images: at most 2 GiB. On Linux the evaluating child also
resets its peak after loading (``/proc/self/clear_refs``) and reports what evaluation added
above what was resident then: the number to hold against ``--chunk-mib``.

    python benchmarks/memory.py --run runs/bmnist-vae --data-dir ../shared/data [-k 5000] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

CHILD = r"""
import json, resource, sys, time
import torch
from vaekit.data import dataset_for_spec
from vaekit.evaluation import evaluate
from vaekit.rundir import load_run
run, data_dir, k, limit, chunk, only_load = sys.argv[1:7]
torch.set_num_threads(int(sys.argv[7]) or torch.get_num_threads())
model = load_run(run)
x = dataset_for_spec(model.data_spec, data_dir or None).test
x = x[: int(limit)] if int(limit) else x
def status_mib(key):  # Linux: VmRSS (now), VmHWM (peak since the last reset)
    try:
        return next(int(l.split()[1]) / 1024 for l in open("/proc/self/status") if l.startswith(key))
    except (OSError, StopIteration):
        return None
start = time.perf_counter()
out = {"n": len(x)}
if only_load != "1":
    evaluate(model, x[:2], 2, chunk_mib=int(chunk))  # first-call allocations, not the chunks'
    load_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    try:
        open("/proc/self/clear_refs", "w").write("5")  # peak := now (ru_maxrss too)
        before = status_mib("VmRSS")
    except OSError:
        before = None
    start = time.perf_counter()
    ev = evaluate(model, x, int(k), chunk_mib=int(chunk), log_abs_det_jacobian=model.data_spec.log_abs_det_jacobian)
    out.update(log_px=ev["log_px"], elbo=ev["elbo"])
    if before is not None:
        out["added_mib"] = status_mib("VmHWM") - before
out["seconds"] = time.perf_counter() - start
out["peak_mib"] = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
                     load_peak if only_load != "1" else 0)
print(json.dumps(out))
"""


def child(args, only_load: bool) -> dict:
    cmd = [sys.executable, "-c", CHILD, args.run, args.data_dir or "", str(args.importance_samples),
           str(args.limit), str(args.chunk_mib), "1" if only_load else "0", str(args.threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="a trained run directory (e.g. the bmnist-vae preset's)")
    ap.add_argument("--data-dir", help="where its data are (else as recorded, or $VAEKIT_DATA_DIR)")
    ap.add_argument("-k", "--importance-samples", type=int, default=5000)
    ap.add_argument("--limit", type=int, default=0, help="first N test examples only (0: all)")
    ap.add_argument("--chunk-mib", type=int, default=0,
                    help="evaluate's memory bound per chunk (0: its default for the CPU)")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    base = child(args, only_load=True)
    t = time.perf_counter()
    ev = child(args, only_load=False)
    wall = time.perf_counter() - t
    print(f"# peak resident memory of evaluation (child processes), run {args.run}")
    print(f"{'what':<44}{'examples':>9}{'K':>6}{'peak MiB':>10}{'seconds':>9}{'added MiB':>11}")
    print(f"{'load run + data only':<44}{base['n']:>9}{'-':>6}{base['peak_mib']:>10.0f}{base['seconds']:>9.1f}")
    added = f"{ev['added_mib']:>11.0f}" if "added_mib" in ev else f"{'-':>11}"
    bound = str(args.chunk_mib) + " MiB" if args.chunk_mib else "default"
    print(f"{'evaluate (chunk bound ' + bound + ')':<44}{ev['n']:>9}"
          f"{args.importance_samples:>6}{ev['peak_mib']:>10.0f}{ev['seconds']:>9.1f}{added}")
    print(f"log p(x) = {ev['log_px']:.3f}, ELBO = {ev['elbo']:.3f}; target peak <= 2048 MiB: "
          f"{'met' if ev['peak_mib'] <= 2048 else 'NOT met'} ({wall:.0f} s wall)")


if __name__ == "__main__":
    main()
