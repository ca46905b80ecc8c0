"""Hierarchical VAEs behind the one-model contract (issue 16): the maths against
independent references, and every command on a hierarchical run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.distributions import MultivariateNormal, Normal

from conftest import assert_one_error, run_cli, tiny_config
from vaekit import config as config_mod
from vaekit.distributions import MIN_SCALE
from vaekit.evaluation import evaluate
from vaekit.hierarchy import HierarchicalVAE
from vaekit.model import build_vae
from vaekit.objectives import elbo, importance_sampled
from vaekit.rundir import load_run
from vaekit.runs import train_and_evaluate


def _model(levels, x_shape=(6,), hidden=(8,), likelihood="gaussian", **model):
    cfg = config_mod.merge(config_mod.Config(), {"model": {
        "latent_dim": levels, "hidden": list(hidden), "likelihood": likelihood, **model}}).validate()
    return build_vae(cfg.model, x_shape, likelihood)


def _normal_from(out: torch.Tensor, size: int, floor: float = MIN_SCALE) -> Normal:
    """A level net's raw output (..., 2*size) read independently: loc, softplus(raw) + floor."""
    loc, raw = out.unflatten(-1, (2, size)).unbind(-2)
    return Normal(loc, F.softplus(raw) + floor)


# ------------------------------------------------------------- densities and gradients


@pytest.mark.parametrize("floor", [MIN_SCALE, 0.3])
def test_posterior_and_prior_log_prob_are_sums_of_their_levels(floor):
    """... with every level's scale floored at model.min_scale (the default, or 0.3)."""
    torch.manual_seed(1)
    m = _model([3, 2, 2], hidden=(8,), activation="tanh", min_scale=floor)
    x = torch.randn(5, 6)
    q = m.encode(x)
    z = q.rsample((4,))  # (4, 5, 7)
    z1, z2, z3 = z.split([3, 2, 2], -1)
    body = [net.body for net in m.q_nets]
    f = x.expand(4, 5, 6)
    expected_q = (_normal_from(body[2](f), 2, floor).log_prob(z3).sum(-1)
                  + _normal_from(body[1](torch.cat([f, z3], -1)), 2, floor).log_prob(z2).sum(-1)
                  + _normal_from(body[0](torch.cat([f, z2], -1)), 3, floor).log_prob(z1).sum(-1))
    torch.testing.assert_close(q.log_prob(z), expected_q)
    pb = [net.body for net in m.p_nets]
    expected_p = (Normal(0.0, 1.0).log_prob(z3).sum(-1)
                  + _normal_from(pb[1](z3), 2, floor).log_prob(z2).sum(-1)
                  + _normal_from(pb[0](z2), 3, floor).log_prob(z1).sum(-1))
    torch.testing.assert_close(m.prior.log_prob(z), expected_p)
    assert q.batch_shape == (5,) and q.event_shape == (7,) and q.mean.shape == (5, 7)
    assert m.prior.sample((9,)).shape == (9, 7)


def test_log_q_at_a_fresh_draw_reuses_the_conditionals_and_agrees():
    """log q(z|x) at the z just drawn takes the level conditionals of the draw instead of
    running the level networks again; values and gradients equal the recomputation's (on a
    copy of z), and a z changed in place after the draw is recomputed."""
    torch.manual_seed(3)
    m = _model([3, 2, 2], hidden=(8,), activation="tanh")
    x = torch.randn(5, 6)
    calls = []
    hooks = [net.register_forward_hook(lambda *_: calls.append(1)) for net in m.q_nets[:-1]]
    q = m.encode(x)
    z = q.rsample_from(torch.randn(4, 5, 7))
    drawn = len(calls)
    cached = q.log_prob(z)
    assert len(calls) == drawn == 2  # one pass of each lower level's network, at the draw
    fresh = q.log_prob(z.clone())
    assert len(calls) == drawn + 2
    torch.testing.assert_close(cached, fresh, rtol=0, atol=0)
    params = list(m.parameters())
    g_cached = torch.autograd.grad(cached.sum(), params, retain_graph=True, allow_unused=True)
    g_fresh = torch.autograd.grad(fresh.sum(), params, retain_graph=True, allow_unused=True)
    for a, b in zip(g_cached, g_fresh):
        if a is None or b is None:
            assert a is None and b is None
        else:
            torch.testing.assert_close(a, b)
    with torch.no_grad():
        z2 = q.rsample_from(torch.randn(4, 5, 7))
        z2[..., :3] += 1.0  # changed after the draw: the cache must not be used
        torch.testing.assert_close(q.log_prob(z2), q.log_prob(z2.clone()), rtol=0, atol=0)
    for h in hooks:
        h.remove()


def test_each_density_runs_once_per_chunk_and_gives_the_same_estimates():
    """The evaluation and the importance-weighted bound take log p(z), log q(z|x) and the
    per-level KL from one pass of the prior and the posterior: p(z1|z2) runs once per chunk
    (it ran twice, once for log w and once more for the KL), and every estimate equals the
    one recomputed term by term here, to the bit."""
    from vaekit.distributions import kl_term
    from vaekit.objectives import iwae_bound

    torch.manual_seed(4)
    m = _model([3, 2], hidden=(8,), activation="tanh", prior="mixture", prior_components=3)
    x = torch.randn(5, 6)
    calls = []
    hook = m.p_nets[0].register_forward_hook(lambda *_: calls.append(1))
    est = importance_sampled(m, x, 6, 3, generator=torch.Generator().manual_seed(0))
    assert len(calls) == 2  # two chunks of three samples, one pass each
    hook.remove()
    gen = torch.Generator().manual_seed(0)
    running, kl_levels = torch.full((5,), -math.inf), torch.zeros(5, 2, dtype=torch.float64)
    with torch.no_grad():
        q, p = m.encode(x), m.prior
        for _ in range(2):
            z = q.rsample_from(torch.randn((3, 5, 5), generator=gen))
            log_w = m.decode(z).log_prob(x) + p.log_prob(z) - q.log_prob(z)
            running = torch.logaddexp(running, torch.logsumexp(log_w, 0))
            per = [a - b for a, b in zip(q.level_log_probs(z), p.level_log_probs(z))]
            kl_levels += torch.stack(per, -1).double().sum(0)
    torch.testing.assert_close(est.log_px, running - math.log(6), rtol=0, atol=0)
    torch.testing.assert_close(est.kl_levels, (kl_levels / 6).float(), rtol=0, atol=0)
    # the bound for training: one pass of p(z1|z2) too, and the KL of the same samples
    calls.clear()
    hook = m.p_nets[0].register_forward_hook(lambda *_: calls.append(1))
    eps = torch.randn(4, 5, 5)
    terms = iwae_bound(m, x, 4, noise=eps)
    assert len(calls) == 1
    hook.remove()
    q = m.encode(x)
    z = q.rsample_from(eps)
    torch.testing.assert_close(terms.kl, kl_term(q, m.prior, z).detach(), rtol=0, atol=0)


def test_ancestral_mean_and_draws_follow_the_levels():
    torch.manual_seed(2)
    m = _model([3, 2])
    x = torch.randn(4, 6)
    q = m.encode(x)
    top = q.top.mean
    below = _normal_from(m.q_nets[0].body(torch.cat([x, top], -1)), 3).mean
    torch.testing.assert_close(q.mean, torch.cat([below, top], -1))
    eps = torch.zeros(1, 4, 5)  # noise 0: the draw is the ancestral mean
    torch.testing.assert_close(q.rsample_from(eps)[0], q.mean)


def test_gradients_reach_every_level_through_rsample():
    torch.manual_seed(3)
    m = _model([3, 2, 2], likelihood="bernoulli", x_shape=(1, 4, 4), prior="vamp",
               prior_components=3)
    x = torch.rand(8, 1, 4, 4).round()
    elbo(m, x, samples=2).loss.sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


# ----------------------------------------------------------- a model with exact log p(x)


def _linear_gaussian(seed=0):
    """z2 ~ N(0, I_2), z1 = A z2 + a + N(0, diag(s1^2)), x = W z1 + b + N(0, sigma^2 I_3):
    x ~ N(W a + b, W (A A^T + diag(s1^2)) W^T + sigma^2 I), exactly."""
    g = torch.Generator().manual_seed(seed)
    m = _model([2, 2], x_shape=(3,), hidden=(), activation="linear", sigma=0.6)
    A, a = torch.randn(2, 2, generator=g), torch.randn(2, generator=g)
    s1 = torch.tensor([0.7, 0.4])
    W, b = torch.randn(3, 2, generator=g), torch.randn(3, generator=g)
    raw = torch.log(torch.expm1(s1 - MIN_SCALE))  # softplus^-1
    with torch.no_grad():
        p = m.p_nets[0].body[0]  # Linear(2 -> 4): loc rows, then raw-scale rows
        p.weight.zero_()
        p.weight[:2] = A
        p.bias.copy_(torch.cat([a, raw]))
        dec = m.decoder.body[0]  # Linear(4 -> 3) over (z1, z2)
        dec.weight.zero_()
        dec.weight[:, :2] = W
        dec.bias.copy_(b)
    cov = W @ (A @ A.T + torch.diag(s1 ** 2)) @ W.T + 0.36 * torch.eye(3)
    return m, MultivariateNormal(W @ a + b, cov)


def test_importance_sampled_log_px_converges_to_the_exact_linear_gaussian_likelihood():
    torch.manual_seed(4)
    m, exact = _linear_gaussian()
    x = exact.sample((40,))
    truth = exact.log_prob(x)
    with torch.no_grad():  # q(z2|x) = p(z2), q(z1|x, z2) = p(z1|z2): a proposal that ignores x
        top, low = m.q_nets[1].body[0], m.q_nets[0].body[0]  # Linear(3 -> 4), Linear(3+2 -> 4)
        top.weight.zero_()
        top.bias.copy_(torch.cat([torch.zeros(2), torch.log(torch.expm1(torch.ones(2) - MIN_SCALE))]))
        low.weight.zero_()
        low.weight[:, 3:] = m.p_nets[0].body[0].weight
        low.bias.copy_(m.p_nets[0].body[0].bias)
    gen = torch.Generator().manual_seed(0)
    est = importance_sampled(m, x, 20_000, 2000, generator=gen)
    assert float((est.log_px - truth).abs().max()) < 0.05
    k10 = importance_sampled(m, x, 10, 10, generator=gen).log_px
    one = elbo(m, x, samples=2000).elbo.detach()
    # ELBO <= L_10 <= log p(x) on average (each by a margin above the estimates' noise)
    assert float(one.mean()) < float(k10.mean()) - 0.05
    assert float(k10.mean()) < float(truth.mean()) - 0.05


# --------------------------------------------------- against an independent estimator


def _public_contract_log_px(model, x, k=3000, seed=0):
    """log 1/K sum p(x|z) p(z) / q(z|x), written only against encode, prior, decode and
    their rsample/log_prob."""
    torch.manual_seed(seed)
    with torch.no_grad():
        q = model.encode(x)
        z = q.rsample((k,))
        log_w = model.decode(z).log_prob(x) + model.prior.log_prob(z) - q.log_prob(z)
        return float((torch.logsumexp(log_w.double(), 0) - math.log(k)).mean())


@pytest.mark.parametrize("latent", [4, [4, 3]])
def test_evaluate_agrees_with_an_independent_estimate(tmp_path, latent):
    cfg = tiny_config(model={"latent_dim": latent}, train={"epochs": 6}, report={"enabled": False})
    train_and_evaluate(cfg, tmp_path / "run")
    model = load_run(tmp_path / "run")
    from vaekit.data import dataset_for_spec

    x = dataset_for_spec(model.data_spec).test[:100]
    ours = evaluate(model, x, 3000, seed=7)["log_px"]
    theirs = _public_contract_log_px(model, x)
    assert abs(ours - theirs) < 0.3


# --------------------------------------------------------------- through the commands


@pytest.fixture(scope="module")
def hrun(tmp_path_factory):
    run = tmp_path_factory.mktemp("hier") / "run"
    res = run_cli("train", "--data", "digits", "--latent-dim", "4,2", "--epochs", "3",
                  "--set", "model.hidden=[32]", "--set", 'model.prior="vamp"',
                  "--set", "model.prior_components=5", "--importance-samples", "20",
                  "--quiet", "--out", str(run))
    assert res.returncode == 0, res.stderr
    return run


def test_every_command_works_on_a_hierarchical_run(hrun, tmp_path):
    ev = json.loads((hrun / "evaluation.json").read_text())
    assert ev["latent_dim"] == 6 and [lv["size"] for lv in ev["levels"]] == [4, 2]
    assert abs(sum(lv["kl"] for lv in ev["levels"]) - ev["kl"]) < 1e-6
    assert "level 2 (z2)" in run_cli("evaluate", str(hrun), "-k", "5").stdout
    for args in (["sample", "-n", "4", "--out", "s.png"],
                 ["sample", "--sampler", "gmm", "-n", "4", "--out", "g.npy"],
                 ["sample", "--sampler", "class:3", "-n", "4", "--out", "c.png"],
                 ["reconstruct", "-n", "3", "--out", "r.png"],
                 ["interpolate", "--from", "0", "--to", "1", "--out", "i.npy"],
                 ["encode", "--stochastic", "--out", "e.npy"],
                 ["diagnose", "--examples", "3", "-k", "20"],
                 ["score", "-k", "5", "--out", "sc.csv"],
                 ["report"]):
        out = [a if not a.endswith((".png", ".npy", ".csv")) else str(tmp_path / a) for a in args]
        res = run_cli(out[0], str(hrun), *out[1:])
        assert res.returncode == 0, (args, res.stderr)
    res = run_cli("encode", str(hrun), "--out", str(tmp_path / "codes.csv"))
    assert "all 2 levels" in res.stderr
    header = (tmp_path / "codes.csv").read_text().splitlines()[0]
    assert header == "z1_1,z1_2,z1_3,z1_4,z2_1,z2_2,label"
    assert np.load(tmp_path / "g.npy").shape == (4, 1, 8, 8)
    html = (hrun / "report.html").read_text()
    assert "these panels show the top one, z2" in html and "What this model gets wrong" in html
    diag = json.loads((hrun / "diagnose.json").read_text())
    assert [lv["size"] for lv in diag["levels"]] == [4, 2] and len(diag["kl_per_unit"]) == 6


def test_latent_levels_are_parsed_and_checked(tmp_path):
    cfg = config_mod.resolve(overrides=[config_mod.parse_override("model.latent_dim=[40, 20]")])
    assert config_mod.latent_levels(cfg.model.latent_dim) == [40, 20]
    with pytest.raises(config_mod.ConfigError, match="list of integers"):
        config_mod.resolve(overrides=[{"model": {"latent_dim": "big"}}])
    with pytest.raises(config_mod.ConfigError, match="positive"):
        config_mod.resolve(overrides=[{"model": {"latent_dim": [8, 0]}}])
    assert_one_error(run_cli("train", "--data", "digits", "--latent-dim", "4,x",
                             "--out", str(tmp_path / "r")), "comma-separated")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("gated", [False, True])
def test_conv_hierarchy_trains(tmp_path, gated):
    cfg = tiny_config(model={"latent_dim": [4, 2], "architecture": "conv", "conv_channels": [8],
                             "gated": gated}, report={"enabled": False})
    summary = train_and_evaluate(cfg, tmp_path / "run")
    assert math.isfinite(summary["evaluation"]["log_px"])
    assert isinstance(load_run(tmp_path / "run"), HierarchicalVAE)


# --------------------------------------------------------------- separate first layers


def _gated_reference(layer, h):
    """a(W1 h + b1) * sigmoid(W2 h + b2) (linear a) from a GatedLinear's raw weights."""
    w, b = layer.linear.weight, layer.linear.bias
    half = w.shape[0] // 2
    return F.linear(h, w[:half], b[:half]) * torch.sigmoid(F.linear(h, w[half:], b[half:]))


def test_separate_inputs_give_each_input_its_own_first_layer():
    # The HVAE of Tomczak & Welling (2018): q(z1|x, z2) reads x and z2 through a gated layer
    # each, p(x|z1, z2) reads z1 and z2 so; their outputs are joined for the next layer.
    torch.manual_seed(0)
    kw = dict(x_shape=(6,), hidden=(5, 4), likelihood="bernoulli", gated=True,
              activation="linear")
    model = _model([3, 2], separate_inputs=True, **kw)
    x, z1, z2 = torch.randn(7, 6), torch.randn(7, 3), torch.randn(7, 2)
    q1 = model.q_nets[0].body
    expect = torch.cat([_gated_reference(q1[0].layers[0], x),
                        _gated_reference(q1[0].layers[1], z2)], -1)
    h = _gated_reference(q1[1], expect)
    torch.testing.assert_close(q1(torch.cat([x, z2], -1)), F.linear(h, q1[2].weight, q1[2].bias))
    dec = model.decoder.body
    expect = torch.cat([_gated_reference(dec[0].layers[0], z1),
                        _gated_reference(dec[0].layers[1], z2)], -1)
    torch.testing.assert_close(dec[:2](torch.cat([z1, z2], -1)), _gated_reference(dec[1], expect))

    def gated(i, o):
        return 2 * (i * o + o)

    def linear(i, o):
        return i * o + o

    count = {  # counted by hand from the architecture above
        "q(z1|x,z2)": gated(6, 5) + gated(2, 5) + gated(10, 4) + linear(4, 6),
        "q(z2|x)": gated(6, 5) + gated(5, 4) + linear(4, 4),
        "p(z1|z2)": gated(2, 5) + gated(5, 4) + linear(4, 6),
        "p(x|z1,z2)": gated(3, 4) + gated(2, 4) + gated(8, 5) + linear(5, 6)}
    nets = [model.q_nets[0], model.q_nets[1], model.p_nets[0], model.decoder]
    for (name, n), net in zip(count.items(), nets):
        assert sum(p.numel() for p in net.parameters()) == n, name
    # by default one first layer reads the concatenation
    joined = _model([3, 2], **kw)
    assert joined.q_nets[0].body[0].linear.in_features == 8
    assert joined.decoder.body[0].linear.in_features == 5


def test_separate_inputs_through_the_commands(hrun, tmp_path):
    run = tmp_path / "sep"
    res = run_cli("train", "--data", "digits", "--latent-dim", "4,2", "--epochs", "2",
                  "--set", "model.hidden=[16]", "--set", "model.separate_inputs=true",
                  "--importance-samples", "10", "--quiet", "--no-report", "--out", str(run))
    assert res.returncode == 0, res.stderr
    model = load_run(run)
    assert model.q_nets[0].body[0].parts == [64, 2] and model.decoder.body[0].parts == [4, 2]
    assert run_cli("train", "--resume", str(run), "--epochs", "3", "--quiet").returncode == 0
    # a run saved before the key existed loads with one joined first layer
    old = tmp_path / "old"
    import shutil

    shutil.copytree(hrun, old)
    toml = (old / "config.toml").read_text()
    assert "separate_inputs = false" in toml
    (old / "config.toml").write_text(toml.replace("separate_inputs = false\n", ""))
    assert load_run(old).q_nets[0].body[0].in_features == 64 + 2
    # a one-level model has no network that reads two inputs: one clear error, no run
    assert_one_error(run_cli("train", "--data", "digits", "--set", "model.separate_inputs=true",
                             "--out", str(tmp_path / "bad")), "model.separate_inputs")
    assert not (tmp_path / "bad").exists()


# --------------------------------------------------------------- the scale floor


@pytest.mark.parametrize("conditional", [False, True])
def test_min_scale_floors_the_posterior_of_one_level_and_conditional_models(conditional):
    cfg = tiny_config(model={"min_scale": 0.3, "conditional": conditional, "hidden": [16]})
    m = build_vae(cfg.model, (1, 8, 8), "bernoulli", num_classes=10)
    x = torch.rand(5, 1, 8, 8).round()
    y = torch.arange(5)
    if conditional:
        h = m.encoder["features"](x)
        raw = m.encoder["head"](torch.cat([h, m.condition(y)], -1)).unflatten(-1, (2, 4))
        q = m.encode(x, y)
    else:
        raw = m.encoder(x)  # (5, 2, 4): location and pre-softplus scale
        q = m.encode(x)
    torch.testing.assert_close(q.mean, raw[:, 0])
    torch.testing.assert_close(q.stddev, F.softplus(raw[:, 1]) + 0.3)


def test_min_scale_is_saved_with_the_run_and_older_runs_keep_the_default(tmp_path):
    cfg = tiny_config(model={"latent_dim": [4, 2], "min_scale": 0.3}, report={"enabled": False})
    train_and_evaluate(cfg, tmp_path / "run")
    m = load_run(tmp_path / "run")
    assert m.min_scale == 0.3 and {net.min_scale for net in [*m.q_nets, *m.p_nets]} == {0.3}
    toml = (tmp_path / "run" / "config.toml").read_text()
    assert "min_scale = 0.3\n" in toml
    (tmp_path / "run" / "config.toml").write_text(toml.replace("min_scale = 0.3\n", ""))
    old = load_run(tmp_path / "run")  # saved before the key existed
    assert {net.min_scale for net in [old, *old.q_nets, *old.p_nets]} == {MIN_SCALE}


def test_pseudo_inputs_start_at_training_examples_or_at_one_grey_level(tmp_path):
    data = torch.rand(50, 6).round()
    cfg = {"latent_dim": [3, 2], "hidden": [8], "prior": "vamp", "prior_components": 20}
    for start in ("data", 0.05):
        c = config_mod.merge(config_mod.Config(), {"model": {**cfg, "pseudo_inputs": start}})
        model = build_vae(c.validate().model, (6,), "bernoulli", init_data=data)
        u = model.prior_module.pseudo_inputs.detach()
        if start == "data":  # each one a training example
            assert all(((data - row).abs().sum(1) == 0).any() for row in u)
        else:
            assert abs(float(u.mean()) - 0.05) < 0.005 and abs(float(u.std()) - 0.01) < 0.003
    assert_one_error(run_cli("train", "--data", "digits", "--set", 'model.pseudo_inputs="grey"',
                             "--out", str(tmp_path / "r")), "model.pseudo_inputs")
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------- initial weights


@pytest.mark.parametrize("model", [
    dict(levels=[6, 4], x_shape=(400,), hidden=(300, 200), gated=True, activation="linear",
         prior="vamp", prior_components=3),
    dict(levels=[6, 4], x_shape=(1, 28, 28), hidden=(64,), architecture="conv",
         conv_channels=[16, 32]),
])
def test_he_init_draws_weights_with_variance_two_over_fan_in(model):
    # model.init = "he" (Tomczak & Welling's code): every linear and convolutional weight
    # ~ N(0, 2 / fan_in); biases and the VampPrior's pseudo-inputs stay as the default build
    # makes them, so the two builds from one seed differ in the weights alone.
    model = dict(model)
    levels, builds = model.pop("levels"), {}
    for init in ("default", "he"):
        torch.manual_seed(0)
        builds[init] = _model(levels, likelihood="bernoulli", init=init, **model)
    default, he = (dict(b.named_parameters()) for b in (builds["default"], builds["he"]))
    layers = {name: m for name, m in builds["he"].named_modules()
              if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ConvTranspose2d))}
    assert any(isinstance(m, torch.nn.Conv2d) for m in layers.values()) == ("conv_channels" in model)
    weights = {f"{name}.weight" for name in layers}
    for name, p in he.items():
        if name not in weights:
            assert torch.equal(p, default[name]), name
    checked = 0
    for name, m in layers.items():
        w = m.weight.detach().double()
        # fan_in as He et al. define it: inputs per output unit (a transposed convolution's
        # weight is (in, out, kh, kw): torch counts out * kh * kw, as kaiming_normal_ does)
        fan_in = w[0].numel()
        if w.numel() < 5000:
            continue
        checked += 1
        n = w.numel()
        want = math.sqrt(2 / fan_in)
        # the sample standard deviation of n normal draws has relative error ~ 1/sqrt(2n)
        assert abs(w.std().item() / want - 1) < 5 / math.sqrt(2 * n), (name, w.std().item(), want)
        assert abs(w.mean().item()) < 5 * want / math.sqrt(n), name
        # PyTorch's default is uniform with bound 1/sqrt(fan_in): a std sqrt(6) times smaller
        d = default[f"{name}.weight"].detach().double()
        assert abs(d.std().item() * math.sqrt(6) / want - 1) < 6 / math.sqrt(n), name
    assert checked >= 3
