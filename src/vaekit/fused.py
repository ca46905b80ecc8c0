"""A hand-derived training step for the classic VAE, without autograd.

The model of Kingma & Welling (2014) as most users first train it: plain MLP encoder and
decoder (ReLU, tanh or no non-linearity), q(z|x) = N(mu, diag s^2) with s = softplus(r) +
MIN_SCALE, p(z) = N(0, I), a Bernoulli p(x|z) from logits, one reparameterised sample. For
a batch of B examples the loss is sum_i [-(log p(x_i|z_i) - beta KL_i)] / B, and its
gradient has a closed form (l = logits, a = 1/B):

    d/dl     = a (sigmoid(l) - x)                       (Bernoulli from logits)
    d/dmu    = d/dz + a beta mu                         (z = mu + s eps; KL = sum
    d/ds     = d/dz eps + a beta (s - 1/s)               -log s + (s^2 + mu^2 - 1)/2)
    d/dr     = d/ds sigmoid(r)                          (softplus' = sigmoid)

and each linear layer h_out = h_in W^T + b passes back W.grad = g^T h_in, b.grad = sum g,
g_in = (g W) * act'(h_in). Written out, one step is the five large matrix products and a
handful of element-wise passes, into gradients allocated once; autograd's graph and its
~100 small nodes go (benchmarks/throughput.py, the 784-400-20 model at batch 128: 1.26-1.28x
the autograd engine's images per second on the 2-core Xeon where it was written, 1.17-1.21x
on a 2-core AMD EPYC, two threads, 2026-12-08). Its formulas are the ones the autograd path
calls (``likelihoods.bernoulli_log_lik``, ``distributions.standard_normal_kl`` and
``positive_scale``), here with their gradients beside them. The gradients equal
autograd's up to float rounding (tests/test_fused.py checks them against autograd for every
supported case); the training loop, optimiser, checkpoints, NaN guard and noise are the
trainer's own, unchanged.

:func:`fused_step_for` says whether a model and configuration are covered; anything else
(gated or convolutional networks, other priors or likelihoods, IWAE, autocast, several
processes, a custom objective) trains through autograd as before.
"""

from __future__ import annotations

import torch
from torch import nn

from .distributions import (
    positive_scale,
    positive_scale_backward,
    standard_normal_kl,
    standard_normal_kl_grad,
)
from .errors import ConfigError
from .likelihoods import BernoulliLikelihood, bernoulli_log_lik, bernoulli_log_lik_grad
from .model import VAE
from .networks import MLPDecoder, MLPEncoder
from .objectives import Terms
from .priors import StandardNormalPrior

# activation module -> in place on a layer's output, and its backward from that output h
# (relu: h > 0; tanh: 1 - h^2)
_FORWARD = {nn.ReLU: torch.Tensor.relu_, nn.Tanh: torch.Tensor.tanh_, nn.Identity: None}
_BACKWARD = {
    nn.ReLU: lambda g, h: torch.ops.aten.threshold_backward(g, h, 0),
    nn.Tanh: lambda g, h: torch.ops.aten.tanh_backward(g, h),
    nn.Identity: lambda g, h: g,
}


def _layers(body: nn.Sequential):
    """[(Linear, activation type or None)] of an MLP body, or None if it is not a plain one."""
    out, modules = [], list(body)
    while modules:
        lin = modules.pop(0)
        if type(lin) is not nn.Linear or lin.bias is None:
            return None
        act = None
        if modules and type(modules[0]) is not nn.Linear:
            act = type(modules.pop(0))
            if act not in _BACKWARD:
                return None
        out.append((lin, act))
    if not out or out[-1][1] is not None:
        return None
    return out


def unsupported_reason(model, cfg, custom_objective: bool, distributed: bool) -> str | None:
    """Why the fused step cannot train this model (None: it can)."""
    t = cfg.train
    if custom_objective:
        return "a custom objective"
    if t.importance_samples != 1:
        return "importance-weighted training (train.importance_samples > 1)"
    if t.precision != "fp32":
        return f"{t.precision} autocast"
    if distributed:
        return "several processes"
    if type(model) is not VAE:  # a subclass may encode or decode otherwise
        return "a model class other than vaekit's VAE"
    if type(model.encoder) is not MLPEncoder or type(model.decoder) is not MLPDecoder:
        return "a network other than a plain MLP"
    encoder, decoder = _layers(model.encoder.body), _layers(model.decoder.body)
    if encoder is None or decoder is None:
        return "gated units or an activation other than relu, tanh or linear"
    if type(model.prior_module) is not StandardNormalPrior:
        return "a prior other than N(0, I)"
    if type(model.likelihood) is not BernoulliLikelihood:
        return "a likelihood other than Bernoulli"
    linears = [lin for lin, _ in encoder + decoder]
    covered = {id(lin.weight) for lin in linears} | {id(lin.bias) for lin in linears}
    params = list(model.parameters())
    if len(covered) != len(params) or any(id(p) not in covered or not p.requires_grad for p in params):
        return "parameters outside the encoder and decoder layers, or frozen ones"
    return None


class FusedStep:
    """Forward pass, loss and gradient (written into each parameter's ``.grad``) of one
    batch; returns the per-example :class:`Terms` and the scalar loss, as the autograd
    path's ``shard_loss(objective(...))`` would."""

    def __init__(self, model):
        self.model = model
        self.encoder = _layers(model.encoder.body)
        self.decoder = _layers(model.decoder.body)
        self.latent = model.latent_dim

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, beta: float, noise: torch.Tensor) -> tuple[Terms, torch.Tensor]:
        b = len(x)
        a = 1.0 / b
        x = x.reshape(b, -1)
        # ---- forward: keep every layer's output (the backward needs them)
        enc_in = self._forward(self.encoder, x)
        latent = self.latent
        h = enc_in[-1]
        mu, raw = h[:, :latent], h[:, latent:]
        scale = positive_scale(raw, self.model.min_scale)
        eps = noise.reshape(b, latent).to(mu.dtype)
        z = torch.addcmul(mu, scale, eps)
        dec_in = self._forward(self.decoder, z)
        logits = dec_in.pop()
        # ---- loss: the formulas of likelihoods.py and distributions.py, with their gradients below
        reconstruction = bernoulli_log_lik(logits, x)
        kl = standard_normal_kl(mu, scale)
        loss_i = torch.sub(kl * beta, reconstruction)
        loss = loss_i.sum().mul_(a)
        # ---- backward
        g = bernoulli_log_lik_grad(logits, x).mul_(a)
        g = self._back(self.decoder, dec_in, g, need_input=True)  # d/dz
        kl_mu, kl_scale = standard_normal_kl_grad(mu, scale)
        g_out = mu.new_empty(b, 2 * latent)
        torch.add(g, kl_mu, alpha=a * beta, out=g_out[:, :latent])  # d/dmu
        g_scale = kl_scale.mul_(a * beta).addcmul_(g, eps)
        positive_scale_backward(g_scale, raw, out=g_out[:, latent:])  # d/dr
        self._back(self.encoder, enc_in, g_out, need_input=False)
        elbo = reconstruction - kl
        return Terms(loss=loss_i, elbo=elbo, reconstruction=reconstruction, kl=kl,
                     objective=elbo), loss

    @staticmethod
    def _forward(layers, h) -> list[torch.Tensor]:
        """[input, each layer's output] through ``layers`` (activations applied in place)."""
        outputs = [h]
        for lin, act in layers:
            h = torch.addmm(lin.bias, h, lin.weight.t())
            if _FORWARD.get(act) is not None:
                _FORWARD[act](h)
            outputs.append(h)
        return outputs

    @staticmethod
    def _back(layers, inputs, g, need_input: bool):
        """Back through ``layers`` from g = d loss / d (last layer's output); writes .grad."""
        for i in range(len(layers) - 1, -1, -1):
            lin, _ = layers[i]
            h_in = inputs[i]
            torch.mm(g.t(), h_in, out=_grad(lin.weight))
            torch.sum(g, 0, out=_grad(lin.bias))
            if i == 0 and not need_input:
                return None
            g = torch.mm(g, lin.weight)
            if i > 0:
                act = layers[i - 1][1]
                if act is not None:
                    g = _BACKWARD[act](g, h_in)
        return g


def _grad(p: torch.Tensor) -> torch.Tensor:
    """``p.grad``, allocated once and then overwritten in place (``out=``): with a fresh
    megabyte-sized gradient every step, the two large weight-gradient products took about
    twice as long here (seen in torch's profiler while this was written; not a benchmark)."""
    if p.grad is None or p.grad.shape != p.shape:
        p.grad = torch.empty_like(p, memory_format=torch.contiguous_format)
    return p.grad


def fused_step_for(model, cfg, custom_objective: bool, distributed: bool):
    """(FusedStep or None, the reason it is not used or None)."""
    reason = unsupported_reason(model, cfg, custom_objective, distributed)
    return (None, reason) if reason else (FusedStep(model), None)


def require(model, cfg, custom_objective: bool = False, distributed: bool = False) -> None:
    """With ``train.engine = "fused"``, refuse (ConfigError) a model the step does not cover."""
    if cfg.train.engine != "fused":
        return
    reason = unsupported_reason(model, cfg, custom_objective, distributed)
    if reason:
        raise ConfigError(f'train.engine = "fused" does not cover {reason}; use '
                          '--set train.engine="auto" (fused where it applies)')
