"""Preparation: a name to raw data, splits, binarisation and scaling, recorded in a
DataSpec; a run's exact data back from its DataSpec."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .formats import _read_array_file, read_image_folder, read_user_file
from .records import DataSpec, Dataset, RawData
from .sources import SOURCES, Where, data_dir_from


def read_raw(name: str, where: Where) -> RawData:
    """What a name stands for: a built-in dataset, a folder of images, or a data file."""
    if name in SOURCES:
        return SOURCES[name].loader(where)
    path = Path(name).expanduser()
    if path.is_dir():
        return read_image_folder(path, where.image_size)
    if path.suffix.lower() in (".npy", ".npz", ".csv"):
        return read_user_file(path)
    if path.exists():
        raise DataError(f"{path}: cannot read this kind of data; give a .npy, .npz or .csv "
                        "file, a folder of PNG/JPEG images, or a built-in dataset name")
    known = ", ".join(sorted(SOURCES))
    raise DataError(f"unknown dataset {name!r}: not a built-in name ({known}) nor an existing "
                    "file or folder")


def read_points(name: str, where: Where = Where()) -> tuple[np.ndarray, np.ndarray | None]:
    """Points for a mixture fit: an (N, D) float64 array and labels (or None) from a
    ``.npy``/``.npz``/``.csv`` file (codes written by ``vaekit encode``, say) or a built-in
    dataset's training split. A 1-D array is N points of one feature; images are flattened."""
    if name in SOURCES or Path(name).expanduser().is_dir():
        raw = read_raw(name, where)
        x, y = raw.splits["train"], raw.labels.get("train")
    else:
        path = Path(name).expanduser()
        if path.suffix.lower() not in (".npy", ".npz", ".csv"):
            known = ", ".join(sorted(SOURCES))
            raise DataError(f"{name}: give a .npy, .npz or .csv file, or a built-in dataset ({known})")
        x, y = _read_array_file(path)
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise DataError(f"{name}: data must be numeric, got dtype {x.dtype}")
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim == 0 or len(x) == 0:
        raise DataError(f"{name}: holds no points")
    x = x.reshape(len(x), -1).astype(np.float64)
    if not np.isfinite(x).all():
        row = int(np.argwhere(~np.isfinite(x))[0][0])
        raise DataError(f"{name}: holds NaN or infinite values (first in row {row}); remove or "
                        "impute them")
    if y is not None:
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != len(x):
            raise DataError(f"{name}: {len(y)} labels for {len(x)} points; they must match")
    return x, y


def resolve_likelihood(choice: str, raw: RawData) -> str:
    return raw.likelihood if choice == "auto" else choice


def load_dataset(data_cfg, likelihood: str = "auto") -> Dataset:
    """Read, split, binarise and scale a dataset as ``data_cfg`` (a ``DataConfig``) says."""
    data_dir = data_dir_from(data_cfg.data_dir)
    image_size = tuple(data_cfg.image_size) if data_cfg.image_size else None
    raw = read_raw(data_cfg.name, Where(data_dir, data_cfg.split_seed, data_cfg.download,
                                        data_cfg.mirror, image_size))
    return prepare_dataset(raw, data_cfg, likelihood, data_dir)


def prepare_dataset(raw: RawData, data_cfg, likelihood: str = "auto",
                    data_dir: Path | None = None) -> Dataset:
    """Split, binarise and scale what a source yielded, as ``data_cfg`` says (a fraction of
    0 leaves that split empty: the scikit-learn estimator's way)."""
    image_size = tuple(data_cfg.image_size) if data_cfg.image_size else None
    likelihood = resolve_likelihood(likelihood, raw)
    binarize = data_cfg.binarize
    if binarize == "auto":
        binarize = raw.binarize if likelihood == "bernoulli" else "none"
    scaling = data_cfg.scaling
    if scaling == "auto":
        scaling = "standardize" if likelihood != "bernoulli" and not raw.image else "none"

    splits, labels = _split(raw, data_cfg)
    if data_cfg.max_train:
        splits["train"] = splits["train"][: data_cfg.max_train]
        if labels["train"] is not None:
            labels["train"] = labels["train"][: data_cfg.max_train]
    for split, x in splits.items():
        if len(x) == 0 and (split == "train" or getattr(data_cfg, f"{split}_fraction") > 0):
            raise DataError(f"dataset {data_cfg.name!r} leaves no examples for the {split} split; "
                            "give more data or change data.valid_fraction/test_fraction")
    tensors = {s: torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)) for s, x in splits.items()}

    if binarize != "none":
        lo = min(float(t.min()) for t in tensors.values() if len(t))
        hi = max(float(t.max()) for t in tensors.values() if len(t))
        if lo < 0 or hi > 1:
            raise DataError(f"cannot binarise {data_cfg.name!r}: values lie in [{lo:g}, {hi:g}], "
                            "not in [0, 1]")
        gen = torch.Generator().manual_seed(held_out_seed(data_cfg.split_seed))
        for s in ("valid", "test") + (("train",) if binarize == "static" else ()):
            tensors[s] = torch.bernoulli(tensors[s], generator=gen)

    if data_cfg.refit:
        tensors, labels = _join_valid(tensors, labels, splits["valid"], binarize)

    shift = scale = None
    if scaling == "standardize":
        flat = tensors["train"].reshape(len(tensors["train"]), -1).double()
        mean, std = flat.mean(0), flat.std(0)
        std = torch.where(std > 1e-8, std, torch.ones_like(std))
        shift, scale = mean.tolist(), std.tolist()

    spec = DataSpec(
        name=data_cfg.name if data_cfg.name in SOURCES else raw.source, source=raw.source,
        shape=list(raw.shape), likelihood=likelihood, binarize=binarize, scaling=scaling,
        split_seed=data_cfg.split_seed, valid_fraction=data_cfg.valid_fraction,
        test_fraction=data_cfg.test_fraction, max_train=data_cfg.max_train,
        sizes={s: len(t) for s, t in tensors.items()}, image=raw.image,
        class_names=raw.class_names, shift=shift, scale=scale,
        data_dir=str(data_dir.resolve()) if data_dir else "",
        image_size=list(image_size) if image_size else None,
        refit=bool(data_cfg.refit),
    )
    tensors = {s: spec.transform(t).contiguous() for s, t in tensors.items()}
    spec.test_sha256 = hashlib.sha256(tensors["test"].numpy().tobytes()).hexdigest()
    label_t = {s: (torch.from_numpy(np.asarray(y)) if y is not None else None) for s, y in labels.items()}
    return Dataset(spec, tensors["train"], tensors["valid"], tensors["test"],
                   label_t["train"], label_t["valid"], label_t["test"])


def _join_valid(tensors: dict, labels: dict, raw_valid: np.ndarray, binarize: str):
    """data.refit: the validation examples appended to the training split, as that split
    holds them (grey levels under dynamic binarisation, the once-drawn binary values under
    static), and an empty validation split. The held-out splits were binarised first, so
    the test split is the same as without refit."""
    valid = tensors["valid"] if binarize == "static" else torch.from_numpy(
        np.ascontiguousarray(raw_valid, dtype=np.float32))
    tensors = {**tensors, "train": torch.cat([tensors["train"], valid]), "valid": valid[:0]}
    y_train, y_valid = labels["train"], labels["valid"]
    joined = None if y_train is None or y_valid is None else np.concatenate([y_train, y_valid])
    return tensors, {**labels, "train": joined, "valid": None if joined is None else y_valid[:0]}


def _split(raw: RawData, cfg) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray | None]]:
    """The data's own splits where it has them, else a seeded split of the training set."""
    splits = dict(raw.splits)
    labels = {s: raw.labels.get(s) for s in splits}
    rng = np.random.default_rng(cfg.split_seed)
    train, y = splits["train"], labels["train"]
    need = [s for s in ("test", "valid") if s not in splits]
    if need:
        n = len(train)
        order = rng.permutation(n)
        fractions = {"test": cfg.test_fraction, "valid": cfg.valid_fraction}
        start = 0
        for s in need:
            k = max(1, int(round(fractions[s] * n))) if fractions[s] > 0 else 0
            idx = order[start:start + k]
            splits[s] = train[idx]
            labels[s] = y[idx] if y is not None else None
            start += k
        rest = order[start:]
        splits["train"] = train[rest]
        labels["train"] = y[rest] if y is not None else None
    return splits, labels


def dataset_for_spec(spec: DataSpec, data_dir: str | None = None) -> Dataset:
    """Rebuild exactly the dataset a run was trained on, and check its test set is unchanged."""
    from ..config import DataConfig

    name = spec.name
    cfg = DataConfig(name=name, data_dir=data_dir or spec.data_dir, binarize=spec.binarize,
                     scaling=spec.scaling, valid_fraction=spec.valid_fraction,
                     test_fraction=spec.test_fraction, split_seed=spec.split_seed,
                     max_train=spec.max_train, image_size=list(spec.image_size or []),
                     refit=spec.refit)
    data = load_dataset(cfg, spec.likelihood)
    if spec.test_sha256 and data.spec.test_sha256 != spec.test_sha256:
        raise DataError(f"the test set of {name!r} differs from the one this run was trained with "
                        "(the files changed); point --data-dir at the original files")
    return data


def held_out_seed(split_seed: int) -> int:
    """The seed of the held-out splits' one-time binarisation."""
    return split_seed + 7919


def prepare_like(spec: DataSpec, x: torch.Tensor) -> torch.Tensor:
    """Raw examples of another source prepared exactly as a run's held-out data were
    (``spec``): binarised once (with the run's held-out seed) when the run binarised its
    data, then scaled. Values outside [0, 1] where binarisation needs them are refused."""
    x = torch.as_tensor(x, dtype=torch.float32)
    if spec.binarize != "none":
        lo, hi = (float(x.min()), float(x.max())) if x.numel() else (0.0, 1.0)
        if lo < 0 or hi > 1:
            raise DataError(f"this run binarised its data, which needs values in [0, 1]; these "
                            f"lie in [{lo:g}, {hi:g}]")
        x = torch.bernoulli(x, generator=torch.Generator().manual_seed(held_out_seed(spec.split_seed)))
    return spec.transform(x)
