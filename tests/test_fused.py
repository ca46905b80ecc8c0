"""The hand-derived training step against autograd, and the trainer's use of it."""

import copy
import json

import pytest
import torch

from safetensors.torch import load_file

from vaekit import checkpoint as ckpt
from vaekit import config as config_mod
from vaekit.errors import TrainingDiverged, VaekitError
from vaekit.fused import fused_step_for, unsupported_reason
from vaekit.model import build_vae
from vaekit.objectives import elbo
from vaekit.runs import train_and_evaluate
from vaekit.optim import adam_step, grad_check
from vaekit.checkpoint import LATEST

from conftest import run_cli, tiny_config


def model_and_config(x_shape=(7, 9), **model):
    cfg = config_mod.merge(config_mod.Config(), {"model": {
        "latent_dim": 5, "likelihood": "bernoulli", **model}}).validate()
    return build_vae(cfg.model, x_shape, "bernoulli"), cfg


def autograd_reference(vae, x, beta, eps):
    """Loss, terms and gradients as the autograd trainer computes them."""
    vae.zero_grad(set_to_none=True)
    terms = elbo(vae, x, beta, 1, eps)
    loss = terms.loss.sum() / len(x)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in vae.named_parameters()}
    vae.zero_grad(set_to_none=True)
    return loss.detach(), terms, grads


@pytest.mark.parametrize("hidden,activation", [([40], "relu"), ([30, 20], "tanh"),
                                               ([25], "linear"), ([], "relu")])
@pytest.mark.parametrize("beta", [1.0, 0.3, 0.0])
@pytest.mark.parametrize("grey", [False, True])
@pytest.mark.parametrize("min_scale", [1e-5, 0.3])
def test_fused_loss_terms_and_gradients_equal_autograd_in_float64(hidden, activation, beta, grey,
                                                                   min_scale):
    torch.manual_seed(len(hidden) + int(10 * beta))
    vae, cfg = model_and_config(hidden=hidden, activation=activation, min_scale=min_scale)
    vae = vae.double()
    x = torch.rand(13, 7, 9, dtype=torch.float64)  # grey levels: the cross-entropy
    if not grey:
        x = x.round()
    eps = torch.randn(1, 13, 5, dtype=torch.float64)
    loss, terms, grads = autograd_reference(vae, x, beta, eps)

    step, reason = fused_step_for(vae, cfg, custom_objective=False, distributed=False)
    assert reason is None
    fused_terms, fused_loss = step(x, beta, eps)
    torch.testing.assert_close(fused_loss, loss, rtol=1e-12, atol=1e-12)
    for name in ("loss", "elbo", "reconstruction", "kl", "objective"):
        torch.testing.assert_close(getattr(fused_terms, name), getattr(terms, name).detach(),
                                   rtol=1e-12, atol=1e-12, msg=name)
    for name, p in vae.named_parameters():
        torch.testing.assert_close(p.grad, grads[name], rtol=1e-10, atol=1e-12, msg=name)


def test_fused_float32_is_as_close_to_the_float64_gradient_as_autograd_is():
    """In float32 neither engine is exact: both are measured against a float64 autograd
    reference, in a regime that stresses the formulas (scales past softplus' threshold of
    20, logits far into saturation), and the fused step's error must be of autograd's size (within 3x)."""
    torch.manual_seed(3)
    vae, cfg = model_and_config(x_shape=(784,), hidden=[400], latent_dim=20)
    with torch.no_grad():
        vae.encoder.body[-1].bias[20:] = 25.0
        vae.decoder.body[-1].weight.mul_(40.0)
    x = (torch.rand(128, 784) < 0.13).float()
    eps = torch.randn(1, 128, 20)
    exact_loss, exact_terms, exact = autograd_reference(copy.deepcopy(vae).double(), x.double(),
                                                        1.0, eps.double())
    loss, _, autograd = autograd_reference(vae, x, 1.0, eps)
    step, _ = fused_step_for(vae, cfg, False, False)
    fused_terms, fused_loss = step(x, 1.0, eps)
    assert abs(float(fused_loss) - float(exact_loss)) <= 2 * abs(float(loss) - float(exact_loss)) + 1e-4
    torch.testing.assert_close(fused_terms.kl.double(), exact_terms.kl.detach(), rtol=1e-5, atol=1e-4)
    for name, p in vae.named_parameters():
        err = float((p.grad.double() - exact[name]).abs().max())
        err_autograd = float((autograd[name].double() - exact[name]).abs().max())
        assert err <= max(3 * err_autograd, 1e-6 * float(exact[name].abs().max())), \
            (name, err, err_autograd)


def test_gradients_are_overwritten_not_accumulated():
    vae, cfg = model_and_config(hidden=[16])
    step, _ = fused_step_for(vae, cfg, False, False)
    x, eps = torch.rand(6, 7, 9).round(), torch.randn(1, 6, 5)
    step(x, 1.0, eps)
    first = {n: p.grad.clone() for n, p in vae.named_parameters()}
    step(x, 1.0, eps)
    for n, p in vae.named_parameters():
        assert torch.equal(p.grad, first[n]), n


@pytest.mark.parametrize("model,train,custom,distributed,why", [
    ({"gated": True}, {}, False, False, "gated"),
    ({"activation": "elu"}, {}, False, False, "activation"),
    ({"architecture": "conv", "conv_channels": [4]}, {}, False, False, "MLP"),
    ({"prior": "vamp"}, {}, False, False, "prior"),
    ({"prior": "mixture"}, {}, False, False, "prior"),
    ({"likelihood": "gaussian"}, {}, False, False, "likelihood"),
    ({}, {"importance_samples": 3}, False, False, "importance"),
    ({}, {"precision": "bf16"}, False, False, "bf16"),
    ({}, {}, True, False, "custom objective"),
    ({}, {}, False, True, "processes"),
])
def test_what_the_fused_step_does_not_cover_is_named(model, train, custom, distributed, why):
    cfg = config_mod.merge(config_mod.Config(), {"model": {"latent_dim": 3, "hidden": [8],
                                                           "likelihood": "bernoulli", **model},
                                                 "train": train}).validate()
    vae = build_vae(cfg.model, (1, 8, 8), cfg.model.likelihood)
    reason = unsupported_reason(vae, cfg, custom, distributed)
    assert reason is not None and why in reason


def test_a_subclass_of_the_model_is_left_to_autograd():
    from vaekit.model import VAE

    class Tempered(VAE):  # decodes otherwise: the hand-derived gradient would be wrong
        def decode(self, z):
            return super().decode(2 * z)

    vae, cfg = model_and_config(hidden=[8])
    vae.__class__ = Tempered
    assert "model class" in unsupported_reason(vae, cfg, False, False)


def test_auto_uses_the_fused_step_where_it_applies_and_autograd_elsewhere(tmp_path):
    fast = train_and_evaluate(tiny_config(), tmp_path / "fast")
    slow = train_and_evaluate(tiny_config(model={"gated": True}), tmp_path / "slow")
    assert fast["engine"] == "fused" and slow["engine"] == "autograd"


def test_fused_asked_for_an_uncovered_model_is_one_clear_error(tmp_path):
    with pytest.raises(VaekitError, match="does not cover gated units"):
        train_and_evaluate(tiny_config(model={"gated": True}, train={"engine": "fused"}),
                           tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before anything was written
    r = run_cli("train", "--data", "digits", "--epochs", "1", "--out", str(tmp_path / "cli"),
                "--set", "model.gated=true", "--set", 'train.engine="fused"')
    assert r.returncode == 2
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "train.engine" in lines[0] and "gated" in lines[0]
    assert not (tmp_path / "cli").exists()


def valid_elbos(run):
    return [json.loads(l)["valid_elbo"] for l in (run / "metrics.jsonl").read_text().splitlines()]


def test_fused_and_autograd_training_follow_the_same_curve(tmp_path):
    """Same data, noise and initial weights: the two engines differ only in rounding, so
    after several epochs the validation ELBO agrees to a small fraction of a nat."""
    fused_run = train_and_evaluate(tiny_config(train={"epochs": 5}), tmp_path / "f")
    auto_run = train_and_evaluate(tiny_config(train={"epochs": 5, "engine": "autograd"}),
                                  tmp_path / "a")
    assert fused_run["engine"] == "fused" and auto_run["engine"] == "autograd"
    f, a = valid_elbos(tmp_path / "f"), valid_elbos(tmp_path / "a")
    assert f[-1] > f[0] + 1.0  # it learns
    assert max(abs(u - v) for u, v in zip(f, a)) < 0.01, (f, a)


@pytest.mark.parametrize("old_checkpoint", [False, True])
def test_a_resumed_run_keeps_the_engine_it_began_with(tmp_path, old_checkpoint):
    """A run begun with autograd and resumed under "auto" continues with autograd, so it
    ends bit-identical to the uninterrupted run; so does a checkpoint written before the
    fused step existed (no engine recorded)."""
    full = tiny_config(train={"epochs": 4, "engine": "autograd"})
    train_and_evaluate(full, tmp_path / "full")
    train_and_evaluate(tiny_config(train={"epochs": 2, "engine": "autograd"}), tmp_path / "cut")
    if old_checkpoint:
        path = tmp_path / "cut" / LATEST
        tensors, meta = ckpt.load(path)
        assert meta["state"].pop("engine") == "autograd"
        del meta["config"]["train"]["engine"]
        ckpt.atomic_write_bytes(path, ckpt.to_bytes(tensors, meta))
    resumed = train_and_evaluate(tiny_config(train={"epochs": 4}), tmp_path / "cut", resume=True)
    assert resumed["engine"] == "autograd"
    x, y = load_file(str(tmp_path / "full" / LATEST)), load_file(str(tmp_path / "cut" / LATEST))
    keys = [k for k in x if k.startswith(("model.", "optim."))]
    assert keys and all(torch.equal(x[k], y[k]) for k in keys)


def test_nan_guard_stops_the_fused_step_and_keeps_the_checkpoint(tmp_path):
    train_and_evaluate(tiny_config(), tmp_path / "run")
    before = (tmp_path / "run" / LATEST).read_bytes()
    with pytest.raises(TrainingDiverged) as err:
        train_and_evaluate(tiny_config(train={"epochs": 4, "lr": 1e30}), tmp_path / "run",
                           resume=True)
    msg = str(err.value)
    assert "epoch 3" in msg and "learning rate" in msg and "intact" in msg
    assert (tmp_path / "run" / LATEST).read_bytes() == before


def _adam_pair(steps_before: int = 1):
    torch.manual_seed(0)
    shapes = [(30, 50), (30,), (7, 30), (7,)]
    a = [torch.randn(s, requires_grad=True) for s in shapes]
    opt_a = torch.optim.Adam(a, lr=3e-3, fused=True)
    for _ in range(steps_before):
        for p in a:
            p.grad = torch.randn_like(p)
        opt_a.step()
    b = [p.detach().clone().requires_grad_() for p in a]
    opt_b = torch.optim.Adam(b, lr=3e-3, fused=True)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))  # no shared step tensors
    return a, opt_a, b, opt_b


def test_adam_step_is_bit_identical_to_optimizer_step():
    a, opt_a, b, opt_b = _adam_pair()
    for i in range(5):
        for p, q in zip(a, b):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        for group in (opt_a.param_groups[0], opt_b.param_groups[0]):
            group["lr"] = 3e-3 / (i + 1)  # a schedule changes it between steps
        assert adam_step(opt_a)
        opt_b.step()
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    for p, q in zip(a, b):
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(opt_a.state[p][key], opt_b.state[q][key])
    assert float(opt_a.state[a[0]]["step"]) == 6


def test_adam_step_declines_what_it_does_not_cover():
    a, opt_a, _, _ = _adam_pair(steps_before=0)
    for p in a:
        p.grad = torch.randn_like(p)
    assert not adam_step(opt_a)  # no state yet: optimizer.step() creates it
    sgd = torch.optim.SGD(a, lr=0.1)
    assert not adam_step(sgd)
    plain = torch.optim.Adam(a, lr=0.1, fused=False)
    plain.step()
    assert not adam_step(plain)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_grad_check_is_finite_exactly_when_every_gradient_is(bad):
    params = [torch.zeros(3, 4, requires_grad=True), torch.zeros(5, requires_grad=True)]
    params[0].grad = torch.full((3, 4), 1e30)  # large but finite
    params[1].grad = torch.randn(5)
    assert torch.isfinite(grad_check(params, 0.0))
    params[1].grad[2] = bad
    assert not torch.isfinite(grad_check(params, 0.0))
    assert not torch.isfinite(grad_check(params, 1.0))  # clipping: the norm


def test_an_unknown_engine_is_refused_with_the_choices():
    with pytest.raises(config_mod.ConfigError, match="train.engine.*'auto', 'autograd', 'fused'"):
        tiny_config(train={"engine": "jit"})
