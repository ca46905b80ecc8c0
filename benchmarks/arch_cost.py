"""What an architecture costs before it is trained: a preset's training epoch and its K = 5000
test evaluation, projected from timed steps, for wider decoders than the CPU runs used.

For each variant (a preset plus ``--set``-style overrides) the model is built on the preset's
data as `vaekit train` builds it, then, with the given threads:

- one training step (the ELBO's forward and backward on a batch of the preset's size, and
  an Adam step; beta does not change the cost) and one validation batch (the ELBO without gradients)
  are timed, best of ``--repeats`` after a warm-up step;
- one chunk of the evaluation (the batch and samples per chunk that `vaekit evaluate` plans;
  the same terms of log w as ``likelihood.py --parts``) is timed the same way;
- the decoder's FLOPs per latent sample are counted (torch's FlopCounterMode).

An epoch is then projected as (training images / batch) steps plus (validation images / batch)
validation batches, and the test evaluation as (test images x K) / (batch x samples per chunk)
chunks. The projections leave out data shuffling, logging and checkpoints; compare them with
a run's measured epoch (its ``metrics.jsonl``) and evaluation time (``likelihood.py``), as
benchmarks/RESULTS.md does for the variants that were trained.

    python benchmarks/arch_cost.py --data-dir ../shared/data --threads 2
    python benchmarks/arch_cost.py --data-dir ../shared/data --variant "fmnist-best" \\
        --variant "fmnist-best model.conv_refine=[16]"
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

import vaekit
from likelihood import _timed, chunk_parts, decoder_flops, matmul_peak  # benchmarks/likelihood.py
from vaekit import config as config_mod
from vaekit.objectives import elbo
from vaekit.runs import prepare

# the CPU recipes against the literature's decoder (Tomczak & Welling's convHVAE_2level ends
# p(x|z1, z2) with three gated 3 x 3 convolutions of 64 channels at 28 x 28)
VARIANTS = [
    "fmnist-hvae",
    "fmnist-best",
    "fmnist-best model.conv_refine=[16]",
    "fmnist-best model.conv_channels=[32,64] model.conv_refine=[64,64,64]",
]


def parse_variant(text: str) -> tuple[str, list[dict]]:
    """'PRESET key=value ...' -> (preset, overrides), each item read as `--set` reads it."""
    preset, *sets = text.split()
    return preset, [config_mod.parse_override(item) for item in sets]


def best_of(fn, repeats: int) -> float:
    fn()  # warm up
    return min(_timed(fn) for _ in range(repeats))


def measure(text: str, data_dir: str | None, threads: int, repeats: int, samples: int) -> dict:
    preset, overrides = parse_variant(text)
    cfg = config_mod.resolve(preset, None, [*overrides, {
        "data": {"data_dir": data_dir or ""}, "train": {"threads": threads, "progress": False}}])
    data, model = prepare(cfg)
    batch = cfg.train.batch_size
    x = model.shaped(data.train_epoch(torch.Generator().manual_seed(0))[:batch])
    xv = model.shaped(data.valid[:batch])
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)

    def step():
        opt.zero_grad(set_to_none=True)
        elbo(model, x, cfg.train.beta).loss.mean().backward()
        opt.step()

    def valid():
        with torch.no_grad():
            elbo(model, xv)

    model.train()
    step_s = best_of(step, repeats)
    model.eval()
    valid_s = best_of(valid, repeats)
    parts = chunk_parts(model, data.test, samples, threads, repeats)
    chunk_s = sum(sec for sec, _ in parts["parts"].values())
    chunks = len(data.test) * samples / (parts["batch"] * parts["chunk"])
    return {
        "variant": text, "params": sum(p.numel() for p in model.parameters()),
        "dec_mflop": decoder_flops(model) / 1e6, "valid_s": valid_s, "chunk_s": chunk_s,
        "chunks": chunks, "n_train": len(data.train), "n_valid": len(data.valid), "batch": batch,
        "step_s": step_s,
        "epoch_s": len(data.train) / batch * step_s + len(data.valid) / batch * valid_s,
        "epochs": cfg.train.epochs, "eval_s": chunks * chunk_s, "n_test": len(data.test),
    }


def main():
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", help="where the datasets are (else $VAEKIT_DATA_DIR)")
    ap.add_argument("--variant", action="append", default=[],
                    help="'PRESET key=value ...' (repeatable; default: the CPU recipes and the "
                         "literature's decoder width)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("-k", "--importance-samples", type=int, default=5000)
    ap.add_argument("--json", help="also write the rows to this JSON file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = [measure(v, args.data_dir, args.threads, args.repeats, args.importance_samples)
            for v in args.variant or VARIANTS]
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    cpu = platform.processor() or platform.machine()
    print(f"# cost projected from timed steps; vaekit {vaekit.__version__}, torch {torch.__version__}, "
          f"{args.threads} thread(s), cpu ({cpu}); matmul peak {matmul_peak(args.threads):.0f} GFLOP/s")
    print(f"{'variant':<70}{'params':>10}{'dec MFLOP':>10}{'step s':>8}{'epoch s':>9}"
          f"{'train h':>9}{'eval h':>8}")
    for r in rows:
        print(f"{r['variant'][:69]:<70}{r['params']:>10,}{r['dec_mflop']:>10.2f}{r['step_s']:>8.3f}"
              f"{r['epoch_s']:>9.1f}{r['epoch_s'] * r['epochs'] / 3600:>9.1f}{r['eval_s'] / 3600:>8.1f}")
    print(f"# step: one training batch (forward, backward, Adam) of the preset's size; epoch: its "
          f"training and validation sets; train h: the preset's epochs; eval h: K = "
          f"{args.importance_samples} on the {rows[0]['n_test']:,} test images; dec MFLOP: one "
          f"decoder pass for one latent sample")


if __name__ == "__main__":
    main()
