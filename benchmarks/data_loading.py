"""Time to read each data source into memory, as `vaekit train` does.

"read" is the parse alone (e.g. the 60,000 Fashion-MNIST training images from their .gz IDX
file into a float32 array in [0, 1]); "load_dataset" is everything `train` does before the
first step: read, split, binarise, standardise, checksum the test set. Median of --repeats.

    python benchmarks/data_loading.py --data-dir ../shared/data [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

from vaekit import config as config_mod
from vaekit.data import SOURCES, Where, data_dir_from, load_dataset, read_amat, read_idx
from vaekit.data.formats import _open_either
from vaekit.data.sources import _require_files, _unit_interval


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main():
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default="", help="folder with the benchmark data ($VAEKIT_DATA_DIR)")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    where = Where(data_dir_from(args.data_dir))
    rows = []

    fm = _require_files(SOURCES["fashion-mnist"], where)
    secs, x = timed(lambda: _unit_interval(read_idx(_open_either(fm, "train-images-idx3-ubyte"))[:, None]),
                    args.repeats)
    rows.append(("read", "fashion-mnist train images (.gz IDX)", x.shape, secs))
    secs, raw = timed(lambda: SOURCES["fashion-mnist"].loader(where), args.repeats)
    rows.append(("read", "fashion-mnist, all four files", raw.splits["train"].shape, secs))
    bm = _require_files(SOURCES["binarized-mnist"], where)
    secs, x = timed(lambda: read_amat(_open_either(bm, "binarized_mnist_train.amat")), args.repeats)
    rows.append(("read", "binarized-mnist train (.amat text)", x.shape, secs))
    for name in ("fashion-mnist", "binarized-mnist", "default", "digits", "swiss-roll"):
        cfg = config_mod.merge(config_mod.Config(), {"data": {"name": name, "data_dir": args.data_dir}})
        secs, data = timed(lambda: load_dataset(cfg.data), args.repeats)
        rows.append(("load_dataset", name, tuple(data.train.shape), secs))

    print(f"# data loading, median of {args.repeats}")
    print(f"{'step':<14}{'source':<40}{'train shape':<22}{'seconds':>9}")
    for step, name, shape, secs in rows:
        print(f"{step:<14}{name:<40}{str(tuple(shape)):<22}{secs:>9.3f}")


if __name__ == "__main__":
    main()
