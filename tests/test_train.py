"""The trainer: learning happens, resume is exact, the NaN guard stops cleanly."""

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import vaekit
from vaekit.errors import TrainingDiverged
from vaekit.runs import train_and_evaluate
from vaekit.checkpoint import BEST, LATEST

from conftest import tiny_config


def metrics(run):
    return [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]


def test_short_run_raises_validation_elbo_and_writes_a_complete_run(tmp_path):
    cfg = tiny_config(train={"epochs": 6})
    summary = train_and_evaluate(cfg, tmp_path / "run")
    rows = metrics(tmp_path / "run")
    assert [r["epoch"] for r in rows] == list(range(1, 7))
    assert rows[-1]["valid_elbo"] > rows[0]["valid_elbo"] + 1.0
    ev = summary["evaluation"]
    assert ev["log_px"] >= ev["elbo"] - 1e-6 and ev["gap"] >= 0
    for name in ("config.toml", "data.json", "evaluation.json", "summary.json",
                 "checkpoints/best.safetensors", "checkpoints/latest.safetensors"):
        assert (tmp_path / "run" / name).is_file(), name


def test_load_run_gives_eval_mode_model_with_distribution_interfaces(tmp_path):
    train_and_evaluate(tiny_config(), tmp_path / "run")
    vae = vaekit.load_run(tmp_path / "run")
    assert not vae.training
    x = torch.rand(5, 1, 8, 8).round()
    q = vae.encode(x)
    assert q.log_prob(q.sample()).shape == (5,)
    assert vae.decode(q.mean).log_prob(x).shape == (5,)
    assert vae.prior.log_prob(torch.zeros(3, 4)).shape == (3,)
    assert vae.data_spec.binarize == "dynamic" and vae.data_spec.shape == [1, 8, 8]
    torch.testing.assert_close(vae.embed(x), q.mean)  # the default embedding is deterministic
    assert vae.sample(6).shape == (6, 1, 8, 8)
    assert vae.reconstruct(x).shape == x.shape


def _params(run):
    return load_file(str(run / LATEST))


def stop_after(steps):
    """A callback that interrupts training after ``steps`` optimiser steps, as Ctrl-C does."""
    def fn(trainer):
        if trainer.state.step == steps:
            trainer.request_stop()
    return {"on_batch_end": [fn]}


@pytest.mark.parametrize("stop_at", [46, 30])  # 23 batches an epoch: an epoch's end, mid-epoch
@pytest.mark.parametrize("extra", [{}, {"engine": "autograd"},
                                   {"lr_schedule": "cosine", "warmup_epochs": 1,
                                    "importance_samples": 3, "grad_clip": 5.0},
                                   {"ema_decay": 0.95}])
def test_interrupted_and_resumed_run_ends_bit_identical(tmp_path, extra, stop_at):
    cfg = tiny_config(train={"epochs": 4, **extra})
    train_and_evaluate(cfg, tmp_path / "full")
    cut = train_and_evaluate(cfg, tmp_path / "cut", callbacks=stop_after(stop_at))
    assert cut["interrupted"] and cut["steps"] == stop_at
    assert not (tmp_path / "cut" / "evaluation.json").exists()
    train_and_evaluate(cfg, tmp_path / "cut", resume=True)

    a, b = _params(tmp_path / "full"), _params(tmp_path / "cut")
    keys = [k for k in a if k.startswith(("model.", "optim.", "ema."))]
    assert keys and all(torch.equal(a[k], b[k]) for k in keys)
    assert any(k.startswith("ema.") for k in keys) == bool(extra.get("ema_decay"))
    assert [r["valid_elbo"] for r in metrics(tmp_path / "full")] == \
           [r["valid_elbo"] for r in metrics(tmp_path / "cut")]


def test_resume_can_extend_a_finished_run(tmp_path):
    train_and_evaluate(tiny_config(train={"epochs": 2}), tmp_path / "run")
    summary = train_and_evaluate(tiny_config(train={"epochs": 3}), tmp_path / "run", resume=True)
    assert summary["epochs"] == 3 and [r["epoch"] for r in metrics(tmp_path / "run")] == [1, 2, 3]


@pytest.mark.parametrize("schedule", ["exponential", "cosine"])
def test_delayed_schedule_holds_the_rate_then_decays(tmp_path, schedule):
    lr, gamma, start, epochs = 2e-3, 0.5, 3, 6
    cfg = tiny_config(train={"epochs": epochs, "lr": lr, "lr_schedule": schedule,
                             "lr_gamma": gamma, "lr_decay_start": start})
    train_and_evaluate(cfg, tmp_path / "run")
    # the rate each epoch ran at, written out by hand: the schedule's own epoch 0 comes after
    # `start` epochs at the full rate
    span = epochs - start
    if schedule == "exponential":
        want = [lr] * start + [lr * gamma ** k for k in range(span)]
    else:
        want = [lr] * start + [lr * 0.5 * (1 + math.cos(math.pi * k / span)) for k in range(span)]
    assert [r["lr"] for r in metrics(tmp_path / "run")] == pytest.approx(want, rel=1e-12)


def test_run_shorter_than_the_delay_keeps_the_full_rate(tmp_path):
    cfg = tiny_config(train={"epochs": 2, "lr": 3e-3, "lr_schedule": "cosine", "lr_decay_start": 2})
    train_and_evaluate(cfg, tmp_path / "run")
    assert [r["lr"] for r in metrics(tmp_path / "run")] == [3e-3, 3e-3]
    longer = tiny_config(train={"epochs": 4, "lr": 3e-3, "lr_schedule": "cosine", "lr_decay_start": 2})
    train_and_evaluate(longer, tmp_path / "run", resume=True)  # the schedule starts on resume
    assert [r["lr"] for r in metrics(tmp_path / "run")] == pytest.approx([3e-3] * 3 + [1.5e-3])


@pytest.mark.parametrize("schedule", ["exponential", "cosine"])
def test_schedule_added_on_resume_continues_as_if_configured_from_the_start(tmp_path, schedule):
    """A finished constant-rate run extended with a delayed schedule ends bit-identical to a
    run given that schedule from the start (how a long run is annealed after the fact)."""
    later = {"epochs": 5, "lr_schedule": schedule, "lr_gamma": 0.5, "lr_decay_start": 3}
    train_and_evaluate(tiny_config(train=later), tmp_path / "fresh")
    train_and_evaluate(tiny_config(train={"epochs": 3}), tmp_path / "extended")
    train_and_evaluate(tiny_config(train=later), tmp_path / "extended", resume=True)
    a, b = _params(tmp_path / "fresh"), _params(tmp_path / "extended")
    keys = [k for k in a if k.startswith("model.")]
    assert keys and all(torch.equal(a[k], b[k]) for k in keys)
    assert [r["lr"] for r in metrics(tmp_path / "fresh")] == \
           [r["lr"] for r in metrics(tmp_path / "extended")]


def test_learning_rate_changed_on_resume_follows_the_schedule(tmp_path):
    cfg = {"epochs": 2, "lr": 1e-3, "lr_schedule": "exponential", "lr_gamma": 0.5}
    train_and_evaluate(tiny_config(train=cfg), tmp_path / "run")
    train_and_evaluate(tiny_config(train={**cfg, "epochs": 4, "lr": 4e-3}), tmp_path / "run",
                       resume=True)
    assert [r["lr"] for r in metrics(tmp_path / "run")] == pytest.approx([1e-3, 5e-4, 1e-3, 5e-4])


def test_nan_guard_names_the_quantity_and_keeps_last_good_checkpoint(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.normal(size=(300, 6)).astype(np.float32))
    cfg = tiny_config(data={"name": str(tmp_path / "x.npy")},
                      model={"likelihood": "gaussian-learned", "latent_dim": 2},
                      train={"epochs": 3})
    train_and_evaluate(cfg, tmp_path / "run")
    before = (tmp_path / "run" / LATEST).read_bytes()
    wild = tiny_config(data={"name": str(tmp_path / "x.npy")},
                       model={"likelihood": "gaussian-learned", "latent_dim": 2},
                       train={"epochs": 6, "lr": 1e30})
    with pytest.raises(TrainingDiverged) as err:
        train_and_evaluate(wild, tmp_path / "run", resume=True)
    msg = str(err.value)
    assert "epoch 4" in msg and "learning rate" in msg and "intact" in msg
    assert any(q in msg for q in ("loss", "reconstruction", "KL", "gradient", "validation"))
    assert (tmp_path / "run" / LATEST).read_bytes() == before


@pytest.mark.parametrize("gated", [False, True])
def test_conv_model_round_trips_odd_image_sizes(gated):
    from vaekit.config import ModelConfig
    from vaekit.model import build_vae

    for shape in [(1, 28, 28), (3, 13, 17), (2, 9, 8)]:
        cfg = ModelConfig(architecture="conv", latent_dim=3, conv_channels=[4, 8], hidden=[16],
                          gated=gated)
        vae = build_vae(cfg, shape, "bernoulli")
        x = torch.rand(2, *shape)
        assert vae.encode(x).mean.shape == (2, 3)
        assert vae.decode(torch.randn(5, 2, 3)).mean.shape == (5, 2, *shape)
    with pytest.raises(ValueError, match="too small"):
        build_vae(ModelConfig(architecture="conv", conv_channels=[4, 4, 4, 4]), (1, 4, 4), "bernoulli")


def _gated_halves(conv, h, op, **kw):
    """a(W1 * h) sigmoid(W2 * h), each half of the layer's weights applied by F.conv2d or
    F.conv_transpose2d (output channels: dim 0 of a conv's weight, dim 1 of a transposed one's)."""
    import torch.nn.functional as F

    w, b = conv.weight, conv.bias
    c = b.shape[0] // 2
    cut = (slice(None), slice(0, c)) if op is F.conv_transpose2d else (slice(0, c),)
    rest = (slice(None), slice(c, None)) if op is F.conv_transpose2d else (slice(c, None),)
    return op(h, w[cut], b[:c], **kw) * torch.sigmoid(op(h, w[rest], b[c:], **kw))


def _gated_linear(layer, h):
    import torch.nn.functional as F

    w, b = layer.linear.weight, layer.linear.bias
    c = b.shape[0] // 2
    return F.linear(h, w[:c], b[:c]) * torch.sigmoid(F.linear(h, w[c:], b[c:]))


def test_gated_conv_layers_match_an_independent_reference():
    # model.gated with the conv architecture gates every hidden unit, the convolutions' too:
    # h = a(conv_1(x)) * sigmoid(conv_2(x)) (Tomczak & Welling's GatedConv2d). With a = identity
    # (activation "linear", as the hierarchical presets) the gate is the only non-linearity,
    # so a network that ignored model.gated in its conv layers would be affine in z.
    import torch.nn.functional as F

    from vaekit.config import ModelConfig
    from vaekit.model import build_vae
    from vaekit.networks import GatedConv, GatedLinear

    torch.manual_seed(0)
    shape, channels = (1, 13, 17), [4, 6]
    cfg = ModelConfig(architecture="conv", latent_dim=3, conv_channels=channels, hidden=[5],
                      gated=True, activation="linear")
    vae = build_vae(cfg, shape, "bernoulli")
    enc, dec = vae.encoder, vae.decoder
    x = torch.rand(2, *shape)

    # encoder: two gated stride-2 convolutions, a gated hidden layer, a linear output
    h = x
    for layer in enc.convs:
        h = _gated_halves(layer.conv, h, F.conv2d, stride=2, padding=1)
    h = _gated_linear(enc.head[0], h.flatten(1))
    out = F.linear(h, enc.head[1].weight, enc.head[1].bias)
    torch.testing.assert_close(enc(x).flatten(1), out)
    # decoder: gated hidden layer, gated map to the first feature map, a gated transposed
    # convolution, and a plain transposed convolution to the logits
    z = torch.randn(2, 3)
    h = _gated_linear(dec.head[1], _gated_linear(dec.head[0], z)).reshape(2, *dec.start)
    up = dec.deconvs[0].conv
    h = _gated_halves(up, h, F.conv_transpose2d, stride=2, padding=1, output_padding=up.output_padding)
    last = dec.deconvs[1]
    h = F.conv_transpose2d(h, last.weight, last.bias, stride=2, padding=1,
                           output_padding=last.output_padding)
    torch.testing.assert_close(dec(z).reshape(h.shape), h)
    assert [type(m) for m in dec.head] == [GatedLinear, GatedLinear]
    assert sum(isinstance(m, GatedConv) for m in vae.modules()) == 3  # every hidden conv
    # not affine in z: f(a + b) - f(a) - f(b) + f(0) is far from zero
    a, b = torch.randn(2, 3), torch.randn(2, 3)
    second = dec(a + b) - dec(a) - dec(b) + dec(torch.zeros(2, 3))
    assert second.abs().max() > 1e-3
    # without gating the layers (and so the names of saved runs' weights) are as before
    plain = build_vae(ModelConfig(architecture="conv", latent_dim=3, conv_channels=channels,
                                  hidden=[5]), shape, "bernoulli")
    assert [k for k in plain.state_dict() if k.endswith("weight")] == [
        "encoder.convs.0.weight", "encoder.convs.2.weight", "encoder.head.0.weight",
        "encoder.head.2.weight", "decoder.head.0.0.weight", "decoder.head.0.2.weight",
        "decoder.deconvs.0.weight", "decoder.deconvs.2.weight"]


def test_conv_refine_layers_match_an_independent_reference():
    # model.conv_refine: the last transposed convolution outputs conv_channels[0] hidden
    # channels, stride-1 3 x 3 convolutions (gated) run at full resolution, and a 1 x 1
    # convolution gives the likelihood's parameters (the convolutional HVAE's p(x|z)).
    import torch.nn.functional as F

    from vaekit.config import ModelConfig
    from vaekit.model import build_vae
    from vaekit.networks import GatedConv

    torch.manual_seed(0)
    shape, channels, refine = (1, 13, 17), [4, 6], [5, 3]
    cfg = ModelConfig(architecture="conv", latent_dim=3, conv_channels=channels, hidden=[5],
                      gated=True, activation="linear", conv_refine=refine)
    dec = build_vae(cfg, shape, "gaussian-learned").decoder  # two parameters per pixel
    z = torch.randn(2, 3)
    h = _gated_linear(dec.head[1], _gated_linear(dec.head[0], z)).reshape(2, *dec.start)
    for up in (dec.deconvs[0].conv, dec.deconvs[1].conv):  # both transposed convs hidden now
        h = _gated_halves(up, h, F.conv_transpose2d, stride=2, padding=1,
                          output_padding=up.output_padding)
    assert h.shape == (2, channels[0], 13, 17)
    for layer in dec.deconvs[2:4]:
        assert layer.conv.kernel_size == (3, 3)
        h = _gated_halves(layer.conv, h, F.conv2d, padding=1)
    assert h.shape == (2, refine[-1], 13, 17)
    last = dec.deconvs[4]
    h = F.conv2d(h, last.weight, last.bias)
    assert h.shape == (2, 2, 13, 17)
    torch.testing.assert_close(dec(z).reshape(h.shape), h)
    assert len(dec.deconvs) == 5 and sum(isinstance(m, GatedConv) for m in dec.deconvs) == 4
    # ungated: each hidden convolution is followed by the activation, the output layer is not
    plain = build_vae(ModelConfig(architecture="conv", latent_dim=3, conv_channels=channels,
                                  hidden=[5], conv_refine=[7]), shape, "bernoulli").decoder
    assert [type(m).__name__ for m in plain.deconvs] == [
        "ConvTranspose2d", "ReLU", "ConvTranspose2d", "ReLU", "Conv2d", "ReLU", "Conv2d"]
    assert plain.deconvs[4].weight.shape == (7, channels[0], 3, 3)
    assert plain(torch.randn(4, 2, 3)).shape == (4, 2, 1, *shape)


def test_conv_refine_model_trains_and_loads(tmp_path):
    # a conv hierarchy with full-resolution layers trains end to end and loads back from its
    # run directory (the key shapes weights: a resume takes it from the run); an MLP refuses it
    from vaekit.config import SHAPE_KEYS, ConfigError, resolve
    from vaekit.rundir import load_run

    model = {"architecture": "conv", "conv_channels": [8], "conv_refine": [4],
             "latent_dim": [4, 2], "gated": True, "activation": "linear"}
    summary = train_and_evaluate(tiny_config(model=model, train={"epochs": 2}), tmp_path / "run")
    assert math.isfinite(summary["evaluation"]["log_px"])
    weights = load_file(str(tmp_path / "run" / LATEST))
    refine = {k: tuple(v.shape) for k, v in weights.items()
              if k.startswith("model.") and v.dim() == 4 and v.shape[-2:] == (3, 3)}
    assert list(refine.values()) == [(8, 8, 3, 3)], refine  # 4 channels, gated: 2 x 4
    vae = load_run(tmp_path / "run", which="latest")
    assert vae.decoder.deconvs[1].conv.weight.shape == (8, 8, 3, 3)
    assert "model.conv_refine" in SHAPE_KEYS
    with pytest.raises(ConfigError, match="model.conv_refine"):
        resolve(None, None, [{"model": {"conv_refine": [4]}}])
    with pytest.raises(ConfigError, match="positive"):
        resolve(None, None, [{"model": {"architecture": "conv", "conv_refine": [0]}}])


@pytest.mark.parametrize("prior", ["mixture", "vamp", "diag-normal"])
def test_every_prior_trains(tmp_path, prior):
    model = {"prior": prior}
    if prior == "diag-normal":
        model["prior_scales"] = [1.0, 0.5, 2.0, 1.0]
    summary = train_and_evaluate(tiny_config(model=model, train={"epochs": 6}), tmp_path / "run")
    assert math.isfinite(summary["evaluation"]["log_px"])
    rows = metrics(tmp_path / "run")
    assert rows[-1]["valid_elbo"] > rows[0]["valid_elbo"] + 1.0  # it learns with every prior
    # a learnable prior's own parameters move (the gradient reaches them)
    learned = {"mixture": "prior_module.locs", "vamp": "prior_module.pseudo_inputs"}.get(prior)
    if learned:
        torch.manual_seed(0)
        fresh = train_and_evaluate(tiny_config(model=model, train={"epochs": 1, "lr": 1e-12}),
                                   tmp_path / "still")
        assert math.isfinite(fresh["evaluation"]["log_px"])
        moved = load_file(str(tmp_path / "run" / LATEST))[f"model.{learned}"]
        still = load_file(str(tmp_path / "still" / LATEST))[f"model.{learned}"]
        assert (moved - still).abs().max() > 1e-3


def test_tensorboard_writes_scalars_and_sample_images(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train_and_evaluate(tiny_config(train={"epochs": 3, "tensorboard": True}), tmp_path / "run")
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"images": 0}).Reload()
    rows = metrics(tmp_path / "run")
    elbo = events.Scalars("train/elbo")
    assert [e.step for e in elbo] == [1, 2, 3]
    assert [e.value for e in elbo] == pytest.approx([r["train_elbo"] for r in rows], rel=1e-6)
    assert [e.step for e in events.Scalars("valid/kl")] == [1, 2, 3]
    assert len(events.Images("samples/prior_means")) == 3


def test_tensorboard_missing_is_one_clear_error(tmp_path, monkeypatch):
    import sys

    from vaekit.errors import VaekitError

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if not installed
    with pytest.raises(VaekitError, match="pip install tensorboard"):
        train_and_evaluate(tiny_config(train={"tensorboard": True}), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_bf16_autocast_trains_with_finite_float32_likelihoods(tmp_path):
    fp32 = train_and_evaluate(tiny_config(train={"epochs": 3}), tmp_path / "a")["evaluation"]
    bf16 = train_and_evaluate(tiny_config(train={"epochs": 3, "precision": "bf16"}), tmp_path / "b")["evaluation"]
    assert math.isfinite(bf16["log_px"]) and bf16["log_px"] >= bf16["elbo"]
    assert abs(bf16["elbo"] - fp32["elbo"]) < 3.0  # same model and data, lower-precision matmuls


@pytest.mark.parametrize("normalize", [True, False])
def test_grad_normalize_gives_the_optimiser_unit_norm_gradients(tmp_path, monkeypatch, normalize):
    """train.grad_normalize: every parameter tensor's gradient reaches the optimiser with L2
    norm 1 (Tomczak & Welling's AdamNormGrad); without it, the raw gradients do."""
    import vaekit.train as train_mod
    monkeypatch.setattr(train_mod, "adam_step", lambda optimizer: False)  # every step: .step()
    norms = []

    def hook(optimizer, args, kwargs):
        norms.extend(float(p.grad.norm()) for g in optimizer.param_groups for p in g["params"]
                     if p.grad is not None)

    from torch.optim.optimizer import register_optimizer_step_pre_hook
    handle = register_optimizer_step_pre_hook(hook)
    try:
        train_and_evaluate(tiny_config(train={"epochs": 1, "grad_normalize": normalize}),
                           tmp_path / "run")
    finally:
        handle.remove()
    assert norms
    close = [abs(n - 1.0) < 1e-5 for n in norms]
    assert all(close) if normalize else not all(close)


def test_weight_average_follows_its_formula_and_is_what_the_run_keeps(tmp_path):
    """train.ema_decay = d: after every step w_avg = d w_avg + (1 - d) w, begun at the first
    step's weights (computed here from the weights seen after each step); validation reads
    the average, and the run keeps and evaluates it, not the trained weights."""
    d = 0.8
    cfg = tiny_config(train={"epochs": 2, "ema_decay": d})
    seen = []

    def record(trainer):
        seen.append({k: v.detach().clone() for k, v in trainer.model.named_parameters()})
        kept.append(trainer)

    kept = []
    train_and_evaluate(cfg, tmp_path / "run", callbacks={"on_batch_end": [record]})
    trainer = kept[-1]
    expected = dict(seen[0])
    for w in seen[1:]:
        expected = {k: d * expected[k] + (1 - d) * w[k] for k in expected}
    average = dict(trainer.ema.module.named_parameters())
    for k, v in expected.items():
        torch.testing.assert_close(average[k], v, rtol=1e-5, atol=1e-6)
    assert not torch.equal(average[k], seen[-1][k])
    # the validation numbers are the average's: the same as the model given its weights
    logged = metrics(tmp_path / "run")[-1]
    ema, trainer.ema = trainer.ema, None
    trainer.model.load_state_dict(ema.module.state_dict())
    assert trainer.validate()["elbo"] == pytest.approx(logged["valid_elbo"], rel=1e-6)
    # what the run keeps is the best checkpoint's average, not its trained weights
    best = load_file(str(tmp_path / "run" / BEST))
    vae = vaekit.load_run(tmp_path / "run")
    for k, v in vae.named_parameters():
        torch.testing.assert_close(v, best[f"ema.module.{k}"], rtol=0, atol=0)
    assert not all(torch.equal(best[f"ema.module.{k}"], best[f"model.{k}"]) for k in expected)


def test_weight_decay_is_decoupled_and_spares_biases_and_pseudo_inputs(tmp_path):
    """train.weight_decay = wd (AdamW): the first step moves a layer's weight matrix to
    w (1 - lr wd) - lr g / (|g| + eps) (Adam's first step, m and v bias-corrected to g and
    g^2, plus the decoupled shrink), and every other parameter (biases, the VampPrior's
    pseudo-inputs) to w - lr g / (|g| + eps) alone; computed here from the weights and
    gradients the optimiser saw."""
    lr, wd, eps = 1e-2, 0.5, 1e-8
    cfg = tiny_config(train={"epochs": 1, "lr": lr, "weight_decay": wd},
                      model={"prior": "vamp", "prior_components": 4})
    before, after = [], []

    def pre(optimizer, args, kwargs):
        if not before:
            before.extend((id(p), p.detach().clone(), p.grad.detach().clone())
                          for g in optimizer.param_groups for p in g["params"])

    def post(optimizer, args, kwargs):
        if not after:
            after.append({id(p): p.detach().clone() for g in optimizer.param_groups for p in g["params"]})

    from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook
    handles = [register_optimizer_step_pre_hook(pre), register_optimizer_step_post_hook(post)]
    kept = []
    try:
        train_and_evaluate(cfg, tmp_path / "run", callbacks={"on_epoch_end": [lambda t, row: kept.append(t)]})
    finally:
        for h in handles:
            h.remove()
    model = kept[0].model
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {n for n, p in model.named_parameters() if p.ndim == 2 and n.endswith(".weight")
               and "prior" not in n}
    assert decayed and any("pseudo" in n or "prior" in n for n in names.values())
    for pid, w0, g in before:
        shrink = 1 - lr * wd if names[pid] in decayed else 1.0
        expected = w0 * shrink - lr * g / (g.abs() + eps)
        torch.testing.assert_close(after[0][pid], expected, rtol=1e-5, atol=1e-6, msg=names[pid])


def test_weight_decay_changes_on_resume_but_is_not_switched_on_or_off(tmp_path):
    from vaekit.errors import CheckpointError
    run = tmp_path / "run"
    train_and_evaluate(tiny_config(train={"epochs": 1, "weight_decay": 0.1}), run)
    kept = []
    train_and_evaluate(tiny_config(train={"epochs": 2, "weight_decay": 0.3}), run, resume=True,
                       callbacks={"on_epoch_end": [lambda t, row: kept.append(t)]})
    groups = kept[0].optimizer.param_groups
    assert sorted(g["weight_decay"] for g in groups) == [0.0, 0.3]
    with pytest.raises(CheckpointError, match="weight_decay"):
        train_and_evaluate(tiny_config(train={"epochs": 3, "weight_decay": 0.0}), run, resume=True)


def test_a_flipped_byte_in_a_weight_is_refused_on_load(tmp_path):
    # the checkpoint's tensors carry a SHA-256 written with them: a byte changed inside a
    # tensor's data (which parses as well as the original) is caught on every load
    from vaekit import checkpoint as ckpt
    from vaekit.errors import CheckpointError

    tensors = {"w": torch.arange(12, dtype=torch.float32).reshape(3, 4), "b": torch.tensor(2.0)}
    ckpt.save(tmp_path / "c.safetensors", tensors, {"kind": "test"})
    loaded, meta = ckpt.load(tmp_path / "c.safetensors")
    assert meta == {"kind": "test", "format": ckpt.FORMAT}
    assert all(torch.equal(loaded[k], tensors[k]) for k in tensors)
    data = bytearray((tmp_path / "c.safetensors").read_bytes())
    data[-5] ^= 0x01  # inside w's last float
    (tmp_path / "d.safetensors").write_bytes(bytes(data))
    from safetensors.torch import load_file

    assert not torch.equal(load_file(str(tmp_path / "d.safetensors"))["w"], tensors["w"])
    with pytest.raises(CheckpointError, match="damaged.*checksum"):
        ckpt.load(tmp_path / "d.safetensors")


def test_read_only_commands_import_nothing_of_training():
    # sample, encode, reconstruct, report, diagnose and score read runs through rundir; none
    # of them needs the training loop, its runs module or the fused step
    import subprocess
    import sys

    code = ("import sys, vaekit.rundir, vaekit.explore, vaekit.report, vaekit.diagnose; "
            "print(sorted(m for m in ('vaekit.train', 'vaekit.runs', 'vaekit.fused', "
            "'vaekit.optim') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_users_callback_plugs_in_as_the_trainers_own_parts_do(tmp_path):
    # a Callback subclass gets every hook the trainer's parts get, in order, and can end
    # training after an epoch, as early stopping does; the run is then a normal run
    from vaekit.callbacks import Callback

    class Watch(Callback):
        def __init__(self):
            self.events = []

        def on_fit_start(self, trainer, resume):
            self.events.append(("start", resume))

        def on_batch_end(self, trainer):
            self.events.append("batch")

        def on_epoch_end(self, trainer, row):
            self.events.append(("epoch", row["epoch"]))
            trainer.should_stop = row["epoch"] == 2

        def on_fit_end(self, trainer):
            self.events.append("end")

    watch = Watch()
    summary = train_and_evaluate(tiny_config(train={"epochs": 5}), tmp_path / "run",
                                 callbacks=[watch])
    steps = math.ceil(1797 * 0.8 / 64)
    assert watch.events == [("start", False), *["batch"] * steps, ("epoch", 1),
                            *["batch"] * steps, ("epoch", 2), "end"]
    assert summary["epochs"] == 2 and summary["stopped_early"]
    rows = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 2


def test_a_branch_changes_the_batch_size_only_from_an_epochs_end(tmp_path):
    # a checkpoint saved inside an epoch (Ctrl-C) holds its position in batches of the old
    # size: a branch with another batch size from there is refused; from the best epoch's
    # end it is a new run that records the change
    from vaekit.callbacks import Callback
    from vaekit.errors import ConfigError
    from vaekit.rundir import read_config
    from vaekit.runs import fork_run

    class StopInEpochTwo(Callback):
        def on_batch_end(self, trainer):
            if trainer.state.epoch == 1 and trainer.state.batch == 3:
                trainer.request_stop()

    summary = train_and_evaluate(tiny_config(train={"epochs": 3}), tmp_path / "run",
                                 callbacks=[StopInEpochTwo()])
    assert summary["interrupted"]
    bigger = tiny_config(train={"epochs": 3, "batch_size": 128})
    with pytest.raises(ConfigError, match="inside epoch 2 .*batch 3.*--from best"):
        fork_run(tmp_path / "run", tmp_path / "a", "latest", bigger)
    assert not (tmp_path / "a").exists()
    dest, cfg = fork_run(tmp_path / "run", tmp_path / "b", "best", bigger)
    assert read_config(dest).origin.changed == ["train.batch_size: 64 -> 128"] == cfg.origin.changed
    assert train_and_evaluate(cfg, dest, resume=True)["epochs"] == 3
