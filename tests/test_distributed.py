"""Distributed training with torchrun (gloo on the CPU): two processes end where one process
ends with the same global batch, and a two-process run resumes from its checkpoint."""

import json
import os
import subprocess
import sys

import pytest
import torch

from vaekit import checkpoint as ckpt
from vaekit.checkpoint import LATEST

ARGS = ["train", "--data", "digits", "--latent-dim", "4", "--set", "model.hidden=[32]",
        "--batch-size", "64", "--quiet", "--importance-samples", "4", "--no-report",
        "--set", "train.threads=1"]
# Tolerance of the comparison: the two runs differ only in the order in which the gradient
# of a batch is summed (two halves added by all-reduce vs one sum), about 1e-7 relative per
# step; over 46 Adam steps that stays below 1e-4 in every parameter.
ATOL = 1e-4


def torchrun(*args, nproc=2, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
                           "--standalone", "-m", "vaekit", *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


def single(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "vaekit", *args], capture_output=True, text=True,
                          timeout=timeout)


def weights(run):
    tensors, meta = ckpt.load(run / LATEST)
    return {k: v for k, v in tensors.items() if k.startswith("model.")}, meta


@pytest.mark.parametrize("model", [[], ["--latent-dim", "4,2"], ["--set", "model.conditional=true"]],
                         ids=["vae", "hierarchical", "conditional"])
def test_two_processes_match_one_with_the_same_global_batch(tmp_path, model):
    two = torchrun(*ARGS, *model, "--epochs", "2", "--out", str(tmp_path / "two"))
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("test ELBO") == 1  # only rank 0 reports
    one = single(*ARGS, *model, "--epochs", "2", "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    (w2, m2), (w1, m1) = weights(tmp_path / "two"), weights(tmp_path / "one")
    assert m2["world_size"] == 2 and m1["world_size"] == 1
    assert m2["state"]["step"] == m1["state"]["step"] == 46  # 1,437 examples, batch 64, 2 epochs
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], atol=ATOL, rtol=0, msg=k)
    from vaekit.runs import prepare, read_config
    _, initial = prepare(read_config(tmp_path / "one"))  # the weights both runs started from
    start = {f"model.{k}": v for k, v in initial.state_dict().items()}
    assert max(float((w1[k] - start[k]).abs().max()) for k in w1) > 1e-2  # training moved them
    rows2 = [json.loads(l) for l in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    rows1 = [json.loads(l) for l in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(rows1, rows2):
        assert a["train_elbo"] == pytest.approx(b["train_elbo"], abs=1e-3)
        assert a["valid_elbo"] == pytest.approx(b["valid_elbo"], abs=1e-3)


def test_two_process_run_resumes_from_its_checkpoint(tmp_path):
    assert torchrun(*ARGS, "--epochs", "1", "--out", str(tmp_path / "cut")).returncode == 0
    res = torchrun("train", "--resume", str(tmp_path / "cut"), "--epochs", "2", "--quiet",
                   "--importance-samples", "4", "--no-report")
    assert res.returncode == 0, res.stderr[-3000:]
    full = torchrun(*ARGS, "--epochs", "2", "--out", str(tmp_path / "full"))
    assert full.returncode == 0, full.stderr[-3000:]
    (a, ma), (b, mb) = weights(tmp_path / "cut"), weights(tmp_path / "full")
    assert ma["state"]["epoch"] == mb["state"]["epoch"] == 2
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0, msg=k)
    epochs = [json.loads(l)["epoch"] for l in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]


def _ddp_gradient(rank, world, init_file, x, noise, out):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from vaekit.objectives import objective_for
    from vaekit.train import ObjectiveStep, _shard, shard_loss
    from vaekit.distributed import World

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = _model()
    step = DistributedDataParallel(ObjectiveStep(model, objective_for(1)))
    lo, hi = _shard(len(x), World(rank, world))
    shard_loss(step(x[lo:hi], 1.0, noise[:, lo:hi]), world, len(x)).backward()
    if rank == 0:
        torch.save({k: p.grad for k, p in model.named_parameters()}, out)
    dist.destroy_process_group()


def _model():
    from vaekit.config import ModelConfig
    from vaekit.model import build_vae
    return build_vae(ModelConfig(latent_dim=3, hidden=[16]), (1, 8, 8), "bernoulli")


def test_ddp_gradient_equals_the_one_process_gradient_for_an_uneven_split(tmp_path):
    """The trainer's loss scaling makes the gradient DDP averages over an uneven split (13
    examples on 2 processes: 7 + 6) exactly the gradient of the global batch's mean loss."""
    import torch.multiprocessing as mp
    from vaekit.objectives import objective_for
    from vaekit.train import ObjectiveStep, shard_loss

    g = torch.Generator().manual_seed(1)
    x = torch.rand(13, 1, 8, 8, generator=g).round()
    noise = torch.randn(1, 13, 3, generator=g)
    mp.spawn(_ddp_gradient, args=(2, str(tmp_path / "init"), x, noise, str(tmp_path / "g.pt")),
             nprocs=2, join=True)
    ddp = torch.load(tmp_path / "g.pt")
    torch.manual_seed(0)
    model = _model()
    terms = ObjectiveStep(model, objective_for(1))(x, 1.0, noise)
    torch.testing.assert_close(shard_loss(terms, 1, 13), terms.loss.mean())
    terms.loss.mean().backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(ddp[name], p.grad, atol=1e-6, rtol=1e-5, msg=name)
