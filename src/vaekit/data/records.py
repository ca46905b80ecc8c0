"""Records: what a source yields (RawData), how raw data became the model's input
(DataSpec, saved as a run's data.json), and the model-ready tensors (Dataset)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..errors import DataError



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
    refit: bool = False  # the validation split joined the training split (data.refit)

    @property
    def nouns(self) -> tuple[str, str]:
        """What one example of these data is called, singular and plural, in every message
        about them: images for image data, rows for a table or any other vector data."""
        return ("image", "images") if self.image else ("row", "rows")

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

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A split's examples and labels (None when unlabelled); refused with one line when
        the split was trained on (the validation split of a ``data.refit`` run)."""
        if name == "valid" and self.spec.refit:
            raise DataError(f"this run trained on the validation split of {self.spec.name!r} "
                            "(data.refit = true), so it has none held out; use --split test")
        return getattr(self, name), getattr(self, f"{name}_labels")

    def train_epoch(self, generator: torch.Generator) -> torch.Tensor:
        """The training inputs for one epoch: fresh Bernoulli draws under dynamic binarisation."""
        if self.spec.binarize == "dynamic":
            return torch.bernoulli(self.train, generator=generator)
        return self.train
