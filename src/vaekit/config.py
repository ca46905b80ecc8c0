"""Typed configuration: dataclasses with commented defaults, TOML files, dotted overrides.

A run is configured in one place. The resolution order is

    defaults  <-  preset  <-  --config FILE  <-  --set section.key=value and plain flags

and the result is validated once, before anything runs: unknown keys (with the closest
valid key suggested), wrong types and values out of range raise :class:`ConfigError`.
The resolved configuration is written into every run directory as ``config.toml``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from .errors import ConfigError


@dataclass
class DataConfig:
    # A built-in dataset name (see `vaekit datasets`) or a path to the user's own data.
    name: str = "default"
    # Folder holding a built-in dataset's files; "" means $VAEKIT_DATA_DIR.
    data_dir: str = ""
    # "auto" (the dataset's own advice), "none", "dynamic" (x ~ Bernoulli(grey level)
    # drawn anew each epoch; validation and test binarised once with split_seed) or
    # "static" (every split binarised once with split_seed).
    binarize: str = "auto"
    # "auto", "none" or "standardize" (per feature; its log-Jacobian is added back to
    # log p(x) so reported likelihoods are in the data's original units).
    scaling: str = "auto"
    # Fractions held out when a dataset has no split of its own.
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    # Seed of the held-out split and of fixed test-time binarisation.
    split_seed: int = 0
    # Use only the first N training examples (0 = all); handy for quick experiments.
    max_train: int = 0
    # Train on the training and validation splits together (the final fit, once every setting
    # was chosen on validation): nothing is held out but the test split, so the last epoch is
    # the one kept and patience has nothing to watch. The test split stays exactly as without.
    refit: bool = False
    # A folder of images: resize every image to [H, W] ([] = keep; then all must match).
    image_size: list[int] = field(default_factory=list)
    # Download a built-in dataset's missing files into the cache (see `vaekit download`).
    download: bool = False
    # Another base URL to download from instead of the publishers' (a local mirror).
    mirror: str = ""


@dataclass
class ModelConfig:
    # "mlp" or "conv" (convolutional, for C x H x W images).
    architecture: str = "mlp"
    # Latent size: an int (one Gaussian level), or a list of level sizes from the data up,
    # e.g. [40, 40]: a hierarchical VAE p(z2) p(z1|z2) p(x|z1, z2) with q(z2|x) q(z1|x, z2)
    # (the prior below is the top level's).
    latent_dim: int | list[int] = 16
    # Hidden layer widths of the MLP encoder; the decoder mirrors them.
    hidden: list[int] = field(default_factory=lambda: [512, 256])
    # relu, tanh, elu, gelu, softplus, leaky_relu, silu, or linear (with gated units:
    # h = (W1 x) * sigmoid(W2 x), Tomczak & Welling 2018)
    activation: str = "relu"
    # Gated units h = a(W1 x) * sigmoid(W2 x) (Dauphin et al. 2017; Tomczak & Welling 2018),
    # in every hidden layer: with the conv architecture its convolutions are gated too.
    gated: bool = False
    # Networks that read several inputs (a hierarchy's q(z_l|x, z_{l+1}) and its decoder
    # p(x|z_1, ..., z_L); a conditional model's encoder and decoder, beside the class) give
    # each input its own first hidden layer and join their outputs, as the HVAE of Tomczak &
    # Welling (2018); false: one first layer reads the inputs' concatenation.
    separate_inputs: bool = False
    # Channels of the convolutional encoder's stride-2 layers; the decoder mirrors them.
    conv_channels: list[int] = field(default_factory=lambda: [32, 64])
    # Channels of stride-1 3 x 3 convolutions (gated with model.gated) that the conv decoder
    # runs at the image's full resolution after its transposed convolutions, then a 1 x 1
    # convolution to the likelihood's parameters: the convolutional HVAE of Tomczak & Welling
    # (2018) ends p(x|z) with three of 64 channels. [] ends with a transposed convolution.
    conv_refine: list[int] = field(default_factory=list)
    # "auto" (the dataset's advice), "bernoulli", "gaussian" (fixed sigma below) or
    # "gaussian-learned" (sigma output by the decoder, floored at min_sigma).
    likelihood: str = "auto"
    sigma: float = 0.1
    min_sigma: float = 0.001
    # Floor of the scale of every Gaussian over z the networks output (q(z|x); a hierarchy's
    # q(z_l|...) and p(z_l|z_{l+1})): s = softplus(raw) + min_scale. The default only keeps
    # log-densities finite; Tomczak's VampPrior code clips log-variances at -6, a floor of
    # exp(-3) ~ 0.05.
    min_scale: float = 1e-5
    # "normal" N(0, I), "diag-normal" N(0, diag(prior_scales^2)), "mixture" (learnable
    # mixture of prior_components Gaussians) or "vamp" (VampPrior, prior_components
    # pseudo-inputs).
    prior: str = "normal"
    prior_scales: list[float] = field(default_factory=list)
    prior_components: int = 10
    # Where the VampPrior's pseudo-inputs start: "data" (randomly chosen training examples)
    # or a number v (every pixel v + N(0, 0.01^2) noise; Tomczak & Welling's code uses 0.05
    # on binary images).
    pseudo_inputs: str | float = "data"
    # Initial weights of every linear and convolutional layer: "default" (PyTorch's, uniform
    # with bound 1/sqrt(fan_in)) or "he" (normal with standard deviation sqrt(2/fan_in),
    # He et al. 2015, as Tomczak & Welling's VampPrior code; biases keep PyTorch's).
    init: str = "default"
    # A conditional VAE (Sohn et al. 2015) on labelled data: encoder and decoder read the
    # class, q(z|x, y) and p(x|z, y); `vaekit sample RUN --label L` draws new examples of a
    # class. One latent level; the prior is the same for every class (normal or mixture).
    conditional: bool = False


@dataclass
class TrainConfig:
    epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-3
    # "none", "cosine" (to zero over the epochs) or "exponential" (times lr_gamma per epoch).
    lr_schedule: str = "none"
    lr_gamma: float = 0.99
    # Epochs at the full learning rate before the schedule starts from its own epoch 0
    # (0 = from the first); cosine then reaches zero over the remaining epochs. A run shorter
    # than this (a quick try of a preset) keeps the full rate throughout.
    lr_decay_start: int = 0
    # Weight of the KL term (beta-VAE); 1 is the ELBO.
    beta: float = 1.0
    # KL warm-up: beta rises linearly from 0 over this many epochs (Sonderby et al. 2016).
    warmup_epochs: int = 0
    # K > 1 trains the importance-weighted bound L_K (Burda et al. 2016); during KL warm-up
    # beta tempers each weight's log p(z) - log q(z|x) (Sonderby et al. 2016).
    importance_samples: int = 1
    # Clip the gradient's global norm at this value (0 = off).
    grad_clip: float = 0.0
    # Divide each parameter tensor's gradient by its own L2 norm before the optimiser step
    # (after any clipping), as the "AdamNormGrad" of Tomczak & Welling's VampPrior code:
    # every tensor then moves at the rate's pace whatever the size of its gradient.
    grad_normalize: bool = False
    # Polyak averaging: keep an exponential moving average of the weights,
    # w_avg <- d w_avg + (1 - d) w after every optimiser step (begun at the first step's
    # weights), as PixelCNN++, IAF and VDVAE evaluate their models. The average is what is
    # validated, kept as the best model, evaluated and loaded from the run; the trained
    # weights go on training. 0 = off; 0.999 to 0.9999 are usual.
    ema_decay: float = 0.0
    # Decoupled weight decay (AdamW, Loshchilov & Hutter 2019): every step also shrinks the
    # weight matrices of the linear and convolutional layers by lr * weight_decay of
    # themselves; biases, prior parameters and pseudo-inputs are not decayed. A regulariser
    # against over-fitting. 0 = off (plain Adam); 0.01 is AdamW's own default.
    weight_decay: float = 0.0
    # Stop after this many epochs without a better validation objective (0 = never).
    patience: int = 0
    # Restarts (like scikit-learn's n_init): train this many fresh initialisations for
    # restart_epochs epochs each, keep the one with the best validation objective and
    # train it on to `epochs`. 1 = a single run. Restart 0 is the run `seed` gives alone.
    restarts: int = 1
    # Epochs each restart trains before they are compared (0 = all of `epochs`).
    restart_epochs: int = 0
    # Restarts trained at once, each in a worker process with `threads` threads (the
    # restarts do not depend on it: 2 on a 2-core machine with threads = 1 halves the time).
    restart_jobs: int = 1
    seed: int = 0
    # "cpu", "cuda", "mps" or "auto".
    device: str = "cpu"
    # Process-group backend under torchrun: "auto" (NCCL on CUDA GPUs, gloo otherwise),
    # "nccl" or "gloo" (gloo on CUDA lets several processes share one GPU).
    backend: str = "auto"
    # CPU threads for torch (0 = torch's default).
    threads: int = 0
    # "fp32", "bf16" or "fp16" (autocast on the networks; likelihoods stay in fp32).
    precision: str = "fp32"
    # How gradients are computed: "autograd"; "fused" (a hand-derived step for the plain
    # MLP VAE, relu/tanh/linear, with a N(0, I) prior and a Bernoulli likelihood, fp32,
    # one sample, one process); "auto": fused on a CPU wherever it applies. The two agree
    # up to float rounding. A resumed run keeps the engine it began with.
    engine: str = "auto"
    # Show a progress bar on a terminal.
    progress: bool = True
    # Write scalars and sample images for TensorBoard into RUN/tensorboard/ (needs the
    # tensorboard package).
    tensorboard: bool = False


@dataclass
class EvalConfig:
    # Importance samples K for log p(x) at the end of `train` (evaluate has its own flag).
    importance_samples: int = 1000
    # Memory bound of one importance-sampling chunk, in MiB; 0 = sized to the device: 128 on
    # a CPU, 512 on MPS, a quarter of the free memory of a CUDA device.
    chunk_mib: int = 0
    seed: int = 1234


@dataclass
class ReportConfig:
    # Write RUN/report.html (figures, evaluation, latent explorer) at the end of `train`.
    enabled: bool = True
    # Add a t-SNE picture of the codes when the latent space has more than 2 dimensions.
    tsne: bool = False
    # Cells per side of the latent explorer's precomputed grid (2-D latent spaces).
    explorer_grid: int = 32


@dataclass
class OriginConfig:
    # Written by `vaekit train --resume RUN --out NEW` (a branch), never set by hand: the run
    # it continues, from which checkpoint ("latest" or "best") and epoch, and every setting
    # it changed ("key: old -> new"). Empty for a run trained from the start.
    run: str = ""
    checkpoint: str = ""
    epoch: int = 0
    changed: list[str] = field(default_factory=list)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    origin: OriginConfig = field(default_factory=OriginConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> "Config":
        _validate(self)
        return self


# Keys whose values define the shapes of the weights: on resume they come from the run.
SHAPE_KEYS = (
    "model.architecture", "model.latent_dim", "model.hidden", "model.gated",
    "model.separate_inputs", "model.conv_channels", "model.conv_refine", "model.likelihood",
    "model.prior", "model.prior_components", "model.conditional",
)

# What a resumed run may change. Resuming a run in place continues the same model on the same
# data: only how it trains from here (schedule, epochs, rate, the bound, where it runs), how it
# is evaluated and reported, and where its data files are now.
RESUME_SAFE_KEYS = (
    "train.epochs", "train.lr", "train.lr_schedule", "train.lr_gamma", "train.lr_decay_start",
    "train.beta", "train.warmup_epochs", "train.importance_samples", "train.grad_clip",
    "train.grad_normalize", "train.weight_decay", "train.patience", "train.restart_jobs",
    "train.device", "train.backend", "train.threads", "train.precision", "train.engine",
    "train.progress", "train.tensorboard",
    "data.data_dir", "data.download", "data.mirror",
    "eval.*", "report.*",
)
# ... and a branch (`--resume RUN --out NEW`, a new run that starts from RUN's weights) may also
# change these: the batch, the weight average, and the likelihood's and posterior's floors.
BRANCH_SAFE_KEYS = RESUME_SAFE_KEYS + (
    "train.batch_size", "train.ema_decay", "model.sigma", "model.min_sigma", "model.min_scale",
)


def _listed(key: str, keys: tuple[str, ...]) -> bool:
    return key in keys or f"{key.split('.')[0]}.*" in keys


def resume_changes(saved: Config, new: Config, branch: bool) -> list[str]:
    """What ``new`` changes of a run configured as ``saved``, as ``"key: old -> new"``; a
    change that a resume in place (or, with ``branch``, a branch) may not make raises
    :class:`ConfigError` naming the key, both values and the way to go instead."""
    before, after = flatten(saved.to_dict()), flatten(new.to_dict())
    changed = [k for k in after if not k.startswith("origin.") and after[k] != before[k]]
    allowed = BRANCH_SAFE_KEYS if branch else RESUME_SAFE_KEYS
    refused = [k for k in changed if not _listed(k, allowed)]
    if refused:
        what = "; ".join(f"{k} ({before[k]!r} -> {after[k]!r})" for k in refused)
        if not branch and all(_listed(k, BRANCH_SAFE_KEYS) for k in refused):
            how = ("the run would go on as another model under the same name; branch a new "
                   "run from it with --resume RUN --out NEW")
        else:
            how = ("a resumed run keeps its model and data, and a branch (--resume RUN --out "
                   "NEW) may change only what the README's Training section lists; start a new "
                   "run for this")
        raise ConfigError(f"cannot change {what} when resuming: {how}")
    return [f"{k}: {before[k]!r} -> {after[k]!r}" for k in changed]


_CHOICES = {
    "data.binarize": ("auto", "none", "dynamic", "static"),
    "data.scaling": ("auto", "none", "standardize"),
    "model.activation": ("relu", "tanh", "elu", "gelu", "softplus", "leaky_relu", "silu", "linear"),
    "model.init": ("default", "he"),
    "train.lr_schedule": ("none", "cosine", "exponential"),
    "train.device": ("cpu", "cuda", "mps", "auto"),
    "train.backend": ("auto", "nccl", "gloo"),
    "train.precision": ("fp32", "bf16", "fp16"),
    "train.engine": ("auto", "autograd", "fused"),
}

_POSITIVE = (
    "model.sigma", "model.min_sigma", "model.min_scale", "model.prior_components",
    "train.restarts", "train.restart_jobs",
    "train.epochs", "train.batch_size", "train.lr", "train.importance_samples",
    "train.lr_gamma", "eval.importance_samples", "report.explorer_grid",
)
_NON_NEGATIVE = (
    "train.beta", "train.warmup_epochs", "train.grad_clip", "train.patience",
    "train.lr_decay_start", "train.threads", "data.max_train", "eval.chunk_mib",
    "train.restart_epochs", "train.weight_decay",
)


def choices() -> dict[str, tuple[str, ...]]:
    """The allowed values of every key that takes a name; components from the registries."""
    from .registry import ARCHITECTURES, LIKELIHOODS, PRIORS

    return {**_CHOICES, "model.architecture": ARCHITECTURES.names(),
            "model.likelihood": ("auto", *LIKELIHOODS.names()), "model.prior": PRIORS.names()}


def _validate(cfg: Config) -> None:
    flat = flatten(cfg.to_dict())
    for key, allowed in choices().items():
        if flat[key] not in allowed:
            raise ConfigError(
                f"{key} = {flat[key]!r} is not one of {', '.join(map(repr, allowed))}"
            )
    for key in _POSITIVE:
        v = flat[key]
        if not (v > 0 and math.isfinite(v)):
            raise ConfigError(f"{key} must be a positive number, got {v!r}")
    for key in _NON_NEGATIVE:
        v = flat[key]
        if not (v >= 0 and math.isfinite(v)):
            raise ConfigError(f"{key} must be zero or positive, got {v!r}")
    for key in ("data.valid_fraction", "data.test_fraction"):
        if not 0.0 < flat[key] < 1.0:
            raise ConfigError(f"{key} must lie strictly between 0 and 1, got {flat[key]!r}")
    if flat["data.valid_fraction"] + flat["data.test_fraction"] >= 1.0:
        raise ConfigError("data.valid_fraction + data.test_fraction must be below 1")
    sizes = latent_levels(cfg.model.latent_dim)
    if not sizes or any(v <= 0 for v in sizes):
        raise ConfigError(f"model.latent_dim must be a positive integer or a list of them (one per "
                          f"level, from the data up), got {cfg.model.latent_dim!r}")
    if not 0.0 <= cfg.train.ema_decay < 1.0 or not math.isfinite(cfg.train.ema_decay):
        raise ConfigError(f"train.ema_decay must lie in [0, 1) (0 = no weight average; 0.999 is "
                          f"usual), got {cfg.train.ema_decay!r}")
    if cfg.data.refit and cfg.train.restarts > 1:
        raise ConfigError("data.refit = true trains on the validation split, which train.restarts "
                          "compares the restarts on; choose the restart first, then refit")
    if cfg.model.conditional and len(sizes) > 1:
        raise ConfigError("model.conditional = true takes one latent level (an integer "
                          "model.latent_dim); conditional hierarchies are not supported")
    if cfg.model.conditional and cfg.model.prior == "vamp":
        raise ConfigError("model.conditional = true cannot use the VampPrior (its pseudo-inputs "
                          "would need classes); choose model.prior = \"normal\" or \"mixture\"")
    if cfg.model.separate_inputs and len(sizes) == 1 and not cfg.model.conditional:
        raise ConfigError("model.separate_inputs = true needs a network that reads several "
                          "inputs: a hierarchy (a list model.latent_dim) or model.conditional = "
                          "true; a one-level model's networks read one input each")
    for key in ("model.hidden", "model.conv_channels", "model.conv_refine"):
        if any(h <= 0 for h in flat[key]):
            raise ConfigError(f"{key} must hold positive widths, got {flat[key]!r}")
    size = cfg.data.image_size
    if size and (len(size) != 2 or any(v < 1 or v > 4096 for v in size)):
        raise ConfigError(f"data.image_size must be [] or [height, width] with sizes from 1 to "
                          f"4096, got {size!r}")
    if not 2 <= cfg.report.explorer_grid <= 128:
        raise ConfigError(f"report.explorer_grid must be between 2 and 128 cells per side, got "
                          f"{cfg.report.explorer_grid}")
    if cfg.model.architecture == "conv" and not cfg.model.conv_channels:
        raise ConfigError("model.conv_channels must name at least one layer for a conv model")
    if cfg.model.conv_refine and cfg.model.architecture != "conv":
        raise ConfigError("model.conv_refine adds full-resolution layers to a conv decoder; set "
                          "model.architecture = \"conv\" or model.conv_refine = []")
    start = cfg.model.pseudo_inputs
    if start != "data" and (isinstance(start, str) or not math.isfinite(start)):
        raise ConfigError(f"model.pseudo_inputs must be \"data\" or a number (the pixel value "
                          f"the pseudo-inputs start at), got {start!r}")
    if cfg.model.prior == "diag-normal":
        scales = cfg.model.prior_scales
        if len(scales) != sizes[-1]:
            raise ConfigError(
                f"model.prior = 'diag-normal' needs model.prior_scales with {sizes[-1]} positive "
                f"values (the size of the top latent level), got {len(scales)}"
            )
        if any(not (s > 0 and math.isfinite(s)) for s in scales):
            raise ConfigError(f"model.prior_scales must all be positive, got {scales!r}")


def latent_levels(latent_dim: int | list[int]) -> list[int]:
    """model.latent_dim as a list of level sizes from the data up ([16] for 16)."""
    return list(latent_dim) if isinstance(latent_dim, list) else [latent_dim]


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _sections() -> dict[str, type]:
    return {f.name: f.default_factory().__class__ for f in dataclasses.fields(Config)}


def all_keys() -> list[str]:
    return sorted(flatten(Config().to_dict()))


def _suggest(key: str) -> str:
    close = difflib.get_close_matches(key, all_keys(), n=1, cutoff=0.5)
    if not close:  # try matching the last part alone, e.g. "latent_dim" -> model.latent_dim
        tail = key.rsplit(".", 1)[-1]
        close = [k for k in all_keys() if k.endswith("." + tail)]
    return f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(all_keys())}"


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Check ``value`` against the field's type; ints are accepted where floats are."""
    origin = typing.get_origin(annotation)
    if origin in (list,):
        (item_type,) = typing.get_args(annotation)
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list of {item_type.__name__}, got {value!r}")
        return [_coerce(f"{key}[{i}]", v, item_type) for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):  # the first alternative that fits
        options = typing.get_args(annotation)
        for option in options:
            try:
                return _coerce(key, value, option)
            except ConfigError:
                continue
        names = " or ".join("a list of integers" if typing.get_origin(o) is list else
                            f"a {getattr(o, '__name__', o)}".replace("a int", "an integer")
                            for o in options)
        raise ConfigError(f"{key} must be {names}, got {value!r}")
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported config type {annotation!r}")  # pragma: no cover


def merge(cfg: Config, updates: dict[str, Any], source: str = "config") -> Config:
    """Return a copy of ``cfg`` with nested ``updates`` applied and type-checked."""
    data = cfg.to_dict()
    sections = _sections()
    for section, values in updates.items():
        if section not in sections:
            raise ConfigError(f"unknown section [{section}] in {source}{_suggest(section)}")
        if not isinstance(values, dict):
            raise ConfigError(f"[{section}] in {source} must be a table of keys")
        hints = typing.get_type_hints(sections[section])
        for key, value in values.items():
            dotted = f"{section}.{key}"
            if key not in hints:
                raise ConfigError(f"unknown key {dotted!r} in {source}{_suggest(dotted)}")
            data[section][key] = _coerce(dotted, value, hints[key])
    return from_dict(data)


def from_dict(data: dict[str, Any]) -> Config:
    sections = _sections()
    return Config(**{name: cls(**data.get(name, {})) for name, cls in sections.items()})


def parse_override(text: str) -> dict[str, Any]:
    """``"model.latent_dim=2"`` -> ``{"model": {"latent_dim": 2}}`` (values parsed as TOML)."""
    if "=" not in text:
        raise ConfigError(f"--set expects section.key=value, got {text!r}")
    key, raw = (s.strip() for s in text.split("=", 1))
    if key.count(".") != 1:
        raise ConfigError(f"--set key must look like section.key, got {key!r}{_suggest(key)}")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word: take it as a string
    section, name = key.split(".")
    return {section: {name: value}}


def load_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {str(path)!r}: {e}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {e}") from None


def preset_names() -> list[str]:
    folder = resources.files("vaekit") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_preset(name: str, _below: tuple[str, ...] = ()) -> dict[str, Any]:
    if name not in preset_names():
        close = difflib.get_close_matches(name, preset_names(), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"unknown preset {name!r}{hint} (known: {', '.join(preset_names())}; "
            "see `vaekit presets`)"
        )
    values = tomllib.loads(_preset_text(name))
    # `base = "other"`: the other preset's values, then this file's on top (a preset that
    # names another's recipe follows it when that recipe changes)
    base = values.pop("base", None)
    if base is None:
        return values
    if not isinstance(base, str) or base in (name, *_below) or base not in preset_names():
        raise ConfigError(f"preset {name!r} names an unknown base preset {base!r}, or one "
                          "that comes back to it")
    return _deep_merge(load_preset(base, (*_below, name)), values)


def _deep_merge(under: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(under)
    for key, value in over.items():
        out[key] = (_deep_merge(out[key], value)
                    if isinstance(value, dict) and isinstance(out.get(key), dict) else value)
    return out


def _preset_text(name: str) -> str:
    return (resources.files("vaekit") / "presets" / f"{name}.toml").read_text(encoding="utf-8")


def preset_description(name: str) -> str:
    text = _preset_text(name)
    first = text.splitlines()[0] if text else ""
    return first.lstrip("# ").strip()


def resolve(
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: list[dict[str, Any]] | None = None,
) -> Config:
    """Defaults <- preset <- config file <- overrides, validated."""
    layers = [(load_preset(preset), f"preset {preset!r}")] if preset else []
    if config_file:  # a run's config.toml starts a new run: not as a branch of that run
        values = load_toml(config_file)
        values.pop("origin", None)
        layers.append((values, str(config_file)))
    layers += [(update, "command-line options") for update in overrides or []]
    cfg = Config()
    for values, source in layers:
        if "origin" in values:
            raise ConfigError(f"[origin] in {source}: that section is written by vaekit when a "
                              "run is branched (--resume RUN --out NEW), not set by hand")
        cfg = merge(cfg, values, source)
    return cfg.validate()


#: Caps every `vaekit train`'s epochs (restarts' included): how the tutorial's test runs
#: its full-size commands in seconds. Unset in normal use.
MAX_EPOCHS_ENV = "VAEKIT_MAX_EPOCHS"


def cap_epochs(cfg: Config, value: str | None) -> Config:
    """``cfg`` with train.epochs (and restart_epochs, warm-up, the schedule's start) at most
    ``value`` epochs; unchanged for None or ""."""
    if not value:
        return cfg
    try:
        cap = int(value)
    except ValueError:
        raise ConfigError(f"${MAX_EPOCHS_ENV} must be a positive integer, got {value!r}") from None
    if cap < 1:
        raise ConfigError(f"${MAX_EPOCHS_ENV} must be a positive integer, got {value!r}")
    t = cfg.train
    updates = {"epochs": min(t.epochs, cap), "restart_epochs": min(t.restart_epochs, cap),
               "warmup_epochs": min(t.warmup_epochs, cap),
               "lr_decay_start": min(t.lr_decay_start, cap)}
    return merge(cfg, {"train": updates}, f"${MAX_EPOCHS_ENV}").validate()


def to_toml(cfg: Config) -> str:
    """Write a config as TOML (the subset we need: scalars and flat lists)."""
    lines = ["# vaekit resolved configuration"]
    for section, values in cfg.to_dict().items():
        lines.append(f"\n[{section}]")
        for key, value in values.items():
            lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")  # pragma: no cover
