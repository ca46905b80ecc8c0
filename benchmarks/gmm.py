"""EM fit time: vaekit.mixture.GaussianMixture against scikit-learn, same data, same
initialisation, same number of iterations (tol=0, max_iter fixed), side by side.

    python benchmarks/gmm.py [--n 100000 --d 10 --k 10 --iters 20 --repeats 3 --threads 2]

--threads limits both sides alike (torch's intra-op threads; NumPy's BLAS through
threadpoolctl). On a machine where another job holds a core, use --threads 1: a two-thread
operation waits for the busy core and the comparison measures the contention instead.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
import torch
from sklearn.mixture import GaussianMixture as SkGMM

from vaekit.mixture import GaussianMixture


def main():
    ap = argparse.ArgumentParser(allow_abbrev=False)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--d", type=int, default=10)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--covariance-type", default="full", choices=("full", "diag"))
    ap.add_argument("--threads", type=int, default=0, help="threads for both (0: torch's default)")
    args = ap.parse_args()
    from threadpoolctl import threadpool_limits

    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    with threadpool_limits(threads):
        compare(args)


def compare(args):
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=3, size=(args.k, args.d))
    X = centers[rng.integers(args.k, size=args.n)] + rng.normal(size=(args.n, args.d))
    init = dict(weights_init=np.full(args.k, 1 / args.k),
                means_init=X[rng.choice(args.n, args.k, replace=False)],
                precisions_init=(np.stack([np.eye(args.d)] * args.k) if args.covariance_type == "full"
                                 else np.ones((args.k, args.d))))
    kw = dict(n_components=args.k, covariance_type=args.covariance_type, tol=0.0,
              max_iter=args.iters, **init)
    makers = {
        "scikit-learn (float64)": lambda: SkGMM(**kw),
        "vaekit (float64)": lambda: GaussianMixture(**kw, dtype=torch.float64),
        "vaekit (float32)": lambda: GaussianMixture(**kw, dtype=torch.float32),
    }
    times = {name: [] for name in makers}
    scores = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(args.repeats):  # alternate so noise hits all alike
            for name, make in makers.items():
                gm = make()
                t = time.perf_counter()
                gm.fit(X)
                times[name].append(time.perf_counter() - t)
                scores[name] = gm.score(X)
    base = statistics.median(times["scikit-learn (float64)"])
    print(f"# EM fit: N={args.n}, D={args.d}, K={args.k}, {args.covariance_type} covariance, "
          f"{args.iters} iterations, median of {args.repeats}, {torch.get_num_threads()} thread(s) each")
    print(f"{'implementation':<26}{'seconds':>9}{'speed-up':>10}{'mean log-lik':>15}")
    for name in makers:
        t = statistics.median(times[name])
        print(f"{name:<26}{t:>9.3f}{base / t:>9.2f}x{scores[name]:>15.6f}")


if __name__ == "__main__":
    main()
