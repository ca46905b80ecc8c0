"""Training throughput: vaekit's trainer against the pytorch/examples VAE, side by side.

(a) the reference, written here as pytorch/examples/vae/main.py does it: MLP 784-400-20,
    sigmoid + binary_cross_entropy (sum), Adam 1e-3, batch 128, a torch DataLoader over a
    TensorDataset (shuffle=True), per-batch zero_grad/backward/step and loss.item();
(b) vaekit's Trainer on the same model (hidden [400], latent 20, Bernoulli), data (static
    binarized MNIST), batch size and precision, as `vaekit train` runs it (train.engine =
    "auto": the hand-derived fused step, which covers this model);
(c) the same Trainer with train.engine = "autograd", to show what the fused step adds.

Both run in this one process, alternating, so machine noise hits both alike. Prints images
per second, their ratio, the validation ELBO each reached after the same epochs, and the
achieved GFLOP/s against a measured float32 matrix-multiply peak of this machine.

    python benchmarks/throughput.py --data-dir ../shared/data [--epochs 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from vaekit import config as config_mod
from vaekit.data import load_dataset
from vaekit.model import build_vae
from vaekit.objectives import elbo
from vaekit.train import Trainer


class ReferenceVAE(nn.Module):
    """The model of pytorch/examples/vae, verbatim in structure."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 400)
        self.fc21 = nn.Linear(400, 20)
        self.fc22 = nn.Linear(400, 20)
        self.fc3 = nn.Linear(20, 400)
        self.fc4 = nn.Linear(400, 784)

    def encode(self, x):
        h1 = F.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def reparameterize(self, mu, logvar):
        std = torch.exp(0.5 * logvar)
        return mu + torch.randn_like(std) * std

    def decode(self, z):
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z))))

    def forward(self, x):
        mu, logvar = self.encode(x.view(-1, 784))
        z = self.reparameterize(mu, logvar)
        return self.decode(z), mu, logvar


def reference_loss(recon_x, x, mu, logvar):
    bce = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld


def run_reference(train: torch.Tensor, epochs: int, batch: int, seed: int):
    torch.manual_seed(seed)
    model = ReferenceVAE()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(TensorDataset(train.view(len(train), -1)), batch_size=batch, shuffle=True)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for (x,) in loader:
            opt.zero_grad()
            recon, mu, logvar = model(x)
            loss = reference_loss(recon, x, mu, logvar)
            loss.backward()
            loss.item()
            opt.step()
    seconds = time.perf_counter() - start
    return model, seconds


@torch.no_grad()
def reference_valid_elbo(model, valid: torch.Tensor) -> float:
    model.eval()
    torch.manual_seed(0)
    x = valid.view(len(valid), -1)
    recon, mu, logvar = model(x)
    return -float(reference_loss(recon, x, mu, logvar)) / len(x)


def run_vaekit(data, epochs: int, batch: int, seed: int, precision: str, engine: str = "auto"):
    cfg = config_mod.merge(config_mod.Config(), {
        "model": {"hidden": [400], "latent_dim": 20, "activation": "relu", "likelihood": "bernoulli"},
        "train": {"epochs": epochs, "batch_size": batch, "lr": 1e-3, "seed": seed,
                  "progress": False, "precision": precision, "engine": engine},
    }).validate()
    torch.manual_seed(seed)
    model = build_vae(cfg.model, data.shape, "bernoulli")
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(model, data, cfg, run_dir)
        summary = trainer.fit()
    return model, summary["train_seconds"], summary["engine"]


@torch.no_grad()
def vaekit_valid_elbo(model, valid: torch.Tensor) -> float:
    model.eval()
    torch.manual_seed(0)
    return float(elbo(model, valid).elbo.mean())


def matmul_peak(threads: int, n: int = 1024, reps: int = 20) -> float:
    """Measured float32 GFLOP/s of a square matrix multiply (best of several)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


def flops_per_image(hidden: int = 400, latent: int = 20, d: int = 784) -> float:
    """Matrix-multiply FLOPs of one training example: forward 2*MACs; backward twice that,
    less the gradient with respect to the input images, which nobody needs."""
    macs = d * hidden + hidden * 2 * latent + latent * hidden + hidden * d
    return 2 * macs + 4 * macs - 2 * d * hidden


def _per_call_ms(fn, reps: int = 300) -> float:
    for _ in range(30):
        fn()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps * 1e3


@torch.no_grad()
def step_breakdown(data, batch: int, step_ms: float) -> list[tuple[str, float]]:
    """Where one step of (b) goes: parts timed in a loop by themselves (warm caches), the
    element-wise work as the fused step less its products, the loop's own work as (b)'s
    measured step less the fused step and Adam."""
    from vaekit.fused import fused_step_for
    from vaekit.optim import adam_step, make_optimizer

    cfg = config_mod.merge(config_mod.Config(), {
        "model": {"hidden": [400], "latent_dim": 20, "likelihood": "bernoulli"}}).validate()
    torch.manual_seed(0)
    model = build_vae(cfg.model, data.shape, "bernoulli")
    step, _ = fused_step_for(model, cfg, False, False)
    x = data.train[:batch].reshape(batch, -1)
    eps = torch.randn(1, batch, 20)
    enc1, enc2 = model.encoder.body[0], model.encoder.body[2]
    dec1, dec2 = model.decoder.body[0], model.decoder.body[2]
    h, g, g_h = torch.rand(batch, 400), torch.randn(batch, 784), torch.randn(batch, 400)
    z, g_o, g_z = torch.randn(batch, 20), torch.randn(batch, 40), torch.randn(batch, 400)
    out1, out4 = torch.empty(400, 784), torch.empty(784, 400)

    def large():  # x W1^T, h W4^T; dW4 = g^T h, dh = g W4, dW1 = g_h^T x
        torch.addmm(enc1.bias, x, enc1.weight.t())
        torch.addmm(dec2.bias, h, dec2.weight.t())
        torch.mm(g.t(), h, out=out4)
        torch.mm(g, dec2.weight)
        torch.mm(g_h.t(), x, out=out1)

    def small():  # the latent layers: two forward products, four backward
        torch.addmm(enc2.bias, h, enc2.weight.t())
        torch.addmm(dec1.bias, z, dec1.weight.t())
        torch.mm(g_z.t(), z)
        torch.mm(g_z, dec1.weight)
        torch.mm(g_o.t(), h)
        torch.mm(g_o, enc2.weight)

    optimizer = make_optimizer(model, cfg)
    step(x, 1.0, eps)
    optimizer.step()  # creates Adam's state
    t_large, t_small = _per_call_ms(large), _per_call_ms(small)
    t_step = _per_call_ms(lambda: step(x, 1.0, eps))
    t_adam = _per_call_ms(lambda: adam_step(optimizer))
    x1, eps1 = x[:1], eps[:, :1]
    t_one = _per_call_ms(lambda: step(x1, 1.0, eps1))
    return [
        ("five large products (128x784x400)", t_large),
        ("six small products (latent layers)", t_small),
        ("element-wise work of the fused step", t_step - t_large - t_small),
        ("Adam (fused kernel, 648k parameters)", t_adam),
        ("the loop: gather, noise, checks, sums", step_ms - t_step - t_adam),
        ("(b)'s measured step", step_ms),
        ("the fused step at batch 1 (fixed cost)", t_one),
    ]


def main():
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", required=False, help="folder with binarized MNIST (.amat)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds of (a), (b) and (c)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    ap.add_argument("--breakdown", action="store_true",
                    help="also time the parts of one step of (b) (fp32)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_dataset(config_mod.DataConfig(name="binarized-mnist", data_dir=args.data_dir or ""),
                        "bernoulli")
    n = len(data.train)
    names = ("(a) pytorch/examples reference", "(b) vaekit Trainer", "(c) vaekit Trainer, autograd")
    rates: dict[str, list[float]] = {k: [] for k in names}
    elbos: dict[str, list[float]] = {k: [] for k in names}
    engines = set()
    for r in range(args.rounds):
        model, secs = run_reference(data.train, args.epochs, args.batch_size, seed=r)
        rates[names[0]].append(n * args.epochs / secs)
        elbos[names[0]].append(reference_valid_elbo(model, data.valid))
        for name, engine in ((names[1], "auto"), (names[2], "autograd")):
            model, secs, used = run_vaekit(data, args.epochs, args.batch_size, seed=r,
                                           precision=args.precision, engine=engine)
            engines.add(f"{name[:3]} {used}")
            rates[name].append(n * args.epochs / secs)
            elbos[name].append(vaekit_valid_elbo(model, data.valid))
    peak = matmul_peak(torch.get_num_threads())
    fpi = flops_per_image()
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"# throughput: binarized MNIST ({n} images), MLP 784-400-20, batch {args.batch_size}, "
          f"{args.precision}, {args.epochs} epochs x {args.rounds} rounds, {torch.get_num_threads()} threads; "
          f"engines: {', '.join(sorted(engines))}")
    print(f"{'trainer':<34}{'images/s':>10}{'GFLOP/s':>10}{'% peak':>8}{'valid ELBO':>12}")
    for name in names:
        g = med[name] * fpi / 1e9
        print(f"{name:<34}{med[name]:>10.0f}{g:>10.1f}{100 * g / peak:>7.0f}%{statistics.mean(elbos[name]):>12.2f}")
    print(f"{'ratio (b)/(a)':<34}{med[names[1]] / med[names[0]]:>10.2f}x")
    print(f"{'ratio (c)/(a)':<34}{med[names[2]] / med[names[0]]:>10.2f}x")
    print(f"{'matmul peak (1024^2, fp32)':<34}{'':>10}{peak:>10.1f}")
    if args.breakdown:
        step_ms = args.batch_size / med[names[1]] * 1e3
        print(f"\n# one step of (b), batch {args.batch_size}: parts timed alone, the rest by difference")
        for part, ms in step_breakdown(data, args.batch_size, step_ms):
            print(f"{part:<40}{ms:>8.2f} ms")
        print(f"{'2.5x the reference would need':<40}{args.batch_size / med[names[0]] * 1e3 / 2.5:>8.2f} ms")


if __name__ == "__main__":
    main()
