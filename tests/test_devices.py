"""Accelerator paths checked on a CPU wherever their logic allows (issue 19): dtypes per
device type, device names in every command, the GPU count before a process group exists,
checkpoints that resume on machines with fewer GPUs, the fp16 loss scale in checkpoints,
explore on a model that lives on another device, device-independent evaluation noise, the
deferred NaN guard and stop checks of GPU training, and a full disk. Tests that need CUDA
run where it exists and skip with their reason elsewhere."""

from __future__ import annotations

import json
import math
import resource
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from torch.distributions import Categorical, MixtureSameFamily

from conftest import assert_one_error, run_cli, tiny_config
from vaekit import checkpoint as ckpt
from vaekit import distributed, explore, priors
from vaekit import train as train_mod
from vaekit.devices import has_float64, resolve_device, wide_dtype
from vaekit.distributions import diagonal_normal
from vaekit.priors import DiagonalGaussianMixture
from vaekit.errors import TrainingDiverged, VaekitError, WriteError
from vaekit.evaluation import evaluate
from vaekit.mixture import GaussianMixture
from vaekit.objectives import log_weights
from vaekit.rundir import load_run
from vaekit.runs import train_and_evaluate
from vaekit.checkpoint import LATEST
from vaekit.train import Trainer

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


# ------------------------------------------------------------------- dtypes per device


def test_float64_everywhere_but_mps():
    assert has_float64("cpu") and has_float64("cuda") and has_float64(torch.device("cuda", 3))
    assert not has_float64("mps")
    assert wide_dtype("cpu") == wide_dtype("cuda:1") == torch.float64
    assert wide_dtype("mps") == torch.float32
    # GaussianMixture's default dtype follows its device (a name is enough: nothing is made)
    assert GaussianMixture(2)._dtype() == torch.float64
    assert GaussianMixture(2, device="mps")._dtype() == torch.float32
    assert GaussianMixture(2, device="mps", dtype=torch.float64)._dtype() == torch.float64


def test_mixture_log_prob_without_float64_matches_the_reference(monkeypatch):
    """The MPS branch (differences formed directly in float32, in chunks) against
    torch's own MixtureSameFamily, with components narrow enough that an expansion in
    float32 would cancel badly."""
    g = torch.Generator().manual_seed(0)
    k, d = 7, 5
    loc = torch.randn(k, d, generator=g) * 3 + 50.0  # far from the origin
    scale = torch.rand(k, d, generator=g) * 0.05 + 0.01  # narrow
    logits = torch.randn(k, generator=g)
    z = loc[torch.randint(k, (600,), generator=g)] + 0.02 * torch.randn(600, d, generator=g)
    ref = MixtureSameFamily(Categorical(logits=logits.double()),
                            diagonal_normal(loc.double(), scale.double())).log_prob(z.double())
    wide = DiagonalGaussianMixture(logits, loc, scale).log_prob(z)
    monkeypatch.setattr(priors, "wide_dtype", lambda device: torch.float32)
    monkeypatch.setattr(DiagonalGaussianMixture, "DIRECT_ROWS", 64)  # several chunks
    narrow = DiagonalGaussianMixture(logits, loc, scale).log_prob(z)
    torch.testing.assert_close(wide.double(), ref, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(narrow.double(), ref, rtol=1e-5, atol=1e-3)


# ---------------------------------------------------------------------- device names


def test_resolve_device_names():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else
                                           resolve_device("auto").type)
    with pytest.raises(VaekitError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(VaekitError, match="no CUDA GPU"):
            resolve_device("cuda")
    else:
        with pytest.raises(VaekitError, match="this machine has"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("devices") / "run"
    train_and_evaluate(tiny_config(report={"enabled": False}), run)
    return run


def test_every_command_resolves_its_device(small_run, tmp_path):
    assert load_run(small_run, device="auto") is not None  # library use takes "auto" too
    res = run_cli("evaluate", str(small_run), "--device", "auto", "-k", "2", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["importance_samples"] == 2
    assert_one_error(run_cli("evaluate", str(small_run), "--device", "tpu", "-k", "2"),
                     "unknown device")
    if not torch.cuda.is_available():
        before = (small_run / "evaluation.json").read_bytes()
        assert_one_error(run_cli("evaluate", str(small_run), "--device", "cuda", "-k", "2"),
                         "no CUDA GPU", "--device cpu")
        assert (small_run / "evaluation.json").read_bytes() == before
        res = run_cli("train", "--data", "digits", "--device", "cuda", "--epochs", "1",
                      "--out", str(tmp_path / "new"))
        assert_one_error(res, "no CUDA GPU")
        assert not (tmp_path / "new").exists()


# ------------------------------------------------------------- processes against GPUs


def test_more_processes_than_gpus_is_refused_before_any_process_group(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    cuda = torch.device("cuda")
    distributed.check_gpus(cuda, distributed.World(rank=1, size=2, local_rank=1))  # fits
    with pytest.raises(VaekitError, match="--nproc_per_node=2"):
        distributed.check_gpus(cuda, distributed.World(rank=2, size=3, local_rank=2))
    # gloo lets processes share GPUs: allowed, and they take the GPUs in turn
    world = distributed.World(rank=2, size=3, local_rank=2)
    distributed.check_gpus(cuda, world, "gloo")
    assert distributed.device_for(cuda, world) == torch.device("cuda", 0)
    assert distributed.backend_for(cuda) == "nccl"
    assert distributed.backend_for(torch.device("cpu")) == "gloo"
    with pytest.raises(VaekitError, match="needs CUDA GPUs"):
        distributed.backend_for(torch.device("cpu"), "nccl")


def test_setup_checks_the_gpu_count_before_creating_the_process_group(monkeypatch):
    """The check runs before init_process_group (which would otherwise fail with CUDA's
    "invalid device ordinal" on the rank without a GPU)."""
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    called = []
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda *a, **k: called.append(a))
    with pytest.raises(VaekitError, match="more processes on this machine than it has CUDA GPUs"):
        distributed.setup(torch.device("cuda"))
    assert not called


def test_nccl_on_cpu_processes_is_one_error_and_writes_nothing(tmp_path):
    env = {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}
    res = run_cli("train", "--data", "digits", "--epochs", "1", "--out", str(tmp_path / "r"),
                  "--set", 'train.backend="nccl"', env=env)
    assert_one_error(res, "nccl", "gloo")
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------ checkpoints across machines


def test_checkpoint_with_more_gpu_states_than_this_machine_has_resumes(tmp_path):
    """A checkpoint from a 12-GPU machine (rng.cuda.0 .. rng.cuda.11, which sort wrongly as
    strings) resumes here, and the run ends as the uninterrupted one does: training never
    drew from those generators."""
    cfg = tiny_config(train={"epochs": 3}, report={"enabled": False})
    train_and_evaluate(cfg, tmp_path / "full")
    short = tiny_config(train={"epochs": 2}, report={"enabled": False})
    train_and_evaluate(short, tmp_path / "cut")
    tensors, meta = ckpt.load(tmp_path / "cut" / LATEST)
    assert not any(k.startswith("rng.cuda") for k in tensors)  # nothing of the kind is saved
    for i in range(12):
        tensors[f"rng.cuda.{i}"] = torch.zeros(16, dtype=torch.uint8)
    ckpt.save(tmp_path / "cut" / LATEST, tensors, meta)
    train_and_evaluate(cfg, tmp_path / "cut", resume=True)
    a, b = load_file(str(tmp_path / "full" / LATEST)), load_file(str(tmp_path / "cut" / LATEST))
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("model."))


def test_loss_scaler_state_is_in_the_checkpoint(tmp_path):
    """The fp16 GradScaler's scale and growth counter travel with the checkpoint (checked
    with torch's CPU scaler on an fp32 run: the same code path as fp16 on a GPU)."""
    cfg = tiny_config(train={"epochs": 1, "engine": "autograd"})  # fp16 never runs fused
    run = tmp_path / "run"
    run.mkdir()
    from vaekit.data import load_dataset
    from vaekit.model import build_vae

    data = load_dataset(cfg.data, cfg.model.likelihood)

    def trainer():
        torch.manual_seed(0)
        t = Trainer(build_vae(cfg.model, data.shape, data.spec.likelihood), data, cfg, run)
        t.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=3)
        return t

    first = trainer()
    first.fit()
    saved = first.scaler.state_dict()
    assert saved["_growth_tracker"] != 0 or saved["scale"] != 2.0**10  # it moved
    second = trainer()
    second.restore()
    assert second.scaler.state_dict() == saved


@needs_cuda
def test_fp16_run_resumes_bit_identical_on_cuda(tmp_path):
    extra = {"device": "cuda", "precision": "fp16", "epochs": 3}
    cfg = tiny_config(train=extra, report={"enabled": False})
    train_and_evaluate(cfg, tmp_path / "full")
    train_and_evaluate(tiny_config(train={**extra, "epochs": 1}, report={"enabled": False}),
                       tmp_path / "cut")
    train_and_evaluate(cfg, tmp_path / "cut", resume=True)
    a, b = load_file(str(tmp_path / "full" / LATEST)), load_file(str(tmp_path / "cut" / LATEST))
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("model."))


# ---------------------------------------------------------- a model on another device


class _Recorder:
    """Stands in for a model on another device: records the devices its inputs arrive on
    and answers with tensors of that device (the real thing is the CUDA test below)."""

    latent_dim = 2
    x_shape = (3,)
    conditional = False  # the model contract answers it (vaekit.model.VAE)

    def __init__(self, device):
        self.device = torch.device(device)
        self.seen: list[torch.device] = []
        self.param = torch.nn.Parameter(torch.zeros(1, device=self.device))

    def parameters(self):
        return iter([self.param])

    def eval(self):
        return self

    def encode(self, x):
        self.seen.append(x.device)
        return diagonal_normal(torch.zeros(len(x), 2, device=x.device),
                               torch.ones(len(x), 2, device=x.device))

    def decode(self, z):
        self.seen.append(z.device)
        return diagonal_normal(torch.zeros(len(z), 3, device=z.device),
                               torch.ones(len(z), 3, device=z.device))


def test_explore_hands_the_model_tensors_on_its_own_device(monkeypatch):
    """explore's encode/decode move inputs to the model's device and bring results back
    to the CPU. The model here claims the meta device; its outputs are copied back through
    a patched .cpu(), since a meta tensor holds no values."""
    model = _Recorder("meta")
    real_cpu = torch.Tensor.cpu
    monkeypatch.setattr(torch.Tensor, "cpu", lambda t, *a, **k: torch.zeros(t.shape, dtype=t.dtype)
                        if t.device.type == "meta" else real_cpu(t, *a, **k))
    x = torch.rand(5, 3)
    codes = explore.encode(model, x)
    means = explore.decode_mean(model, torch.zeros(4, 2))
    draws = explore.decode_draw(model, torch.zeros(4, 2), torch.Generator().manual_seed(0))
    assert codes.device.type == means.device.type == draws.device.type == "cpu"
    assert model.seen and all(d.type == "meta" for d in model.seen)


@needs_cuda
def test_library_use_of_a_cuda_model(small_run):
    model = load_run(small_run, device="cuda")
    x, z = explore.sample(model, 8, "gmm")
    assert x.device.type == "cpu" and z.shape == (8, model.latent_dim)
    assert explore.encode(model, torch.rand(3, 1, 8, 8).round()).device.type == "cpu"


# ------------------------------------------------------------- evaluation noise


def test_evaluation_noise_comes_from_a_cpu_generator_of_its_seed(small_run):
    """evaluate's estimate is a function of its seed alone (not of torch's global RNG, nor
    of the device the noise is copied to): it equals log 1/K sum w_k computed here with eps
    drawn from torch.Generator().manual_seed(seed) in the same order."""
    model = load_run(small_run)
    x = torch.rand(10, 1, 8, 8).round()
    torch.manual_seed(123)
    a = evaluate(model, x, 7, seed=5)
    torch.manual_seed(999)  # another global state: no effect
    b = evaluate(model, x, 7, seed=5)
    assert a["log_px"] == b["log_px"]
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        q = model.encode(x)
        z = q.mean + q.stddev * torch.randn(7, 10, model.latent_dim, generator=gen)
        log_w, _ = log_weights(model, x, q, model.prior, z)
        expected = (torch.logsumexp(log_w.double(), 0) - math.log(7)).mean()
    assert abs(a["log_px"] - float(expected)) < 1e-4


@needs_cuda
def test_evaluation_agrees_on_cpu_and_cuda(small_run):
    x = torch.rand(50, 1, 8, 8).round()
    cpu = evaluate(load_run(small_run), x, 20, seed=3)
    gpu = evaluate(load_run(small_run, device="cuda"), x, 20, seed=3, device="cuda")
    assert abs(cpu["log_px"] - gpu["log_px"]) < 1e-3


# ----------------------------------------------- GPU training's deferred checks, on a CPU


def test_deferred_checks_stop_and_resume_bit_identical(tmp_path, monkeypatch):
    """With the checks every 5 steps (as on a GPU, every CHECK_EVERY), Ctrl-C takes effect
    at the next check and the resumed run still ends as the uninterrupted one."""
    monkeypatch.setattr(train_mod, "check_interval", lambda device: 5)
    cfg = tiny_config(train={"epochs": 3}, report={"enabled": False})
    train_and_evaluate(cfg, tmp_path / "full")

    def stop(trainer):
        if trainer.state.step == 31:
            trainer.request_stop()

    cut = train_and_evaluate(cfg, tmp_path / "cut", callbacks={"on_batch_end": [stop]})
    assert cut["interrupted"] and 31 < cut["steps"] <= 36
    train_and_evaluate(cfg, tmp_path / "cut", resume=True)
    a, b = load_file(str(tmp_path / "full" / LATEST)), load_file(str(tmp_path / "cut" / LATEST))
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith(("model.", "optim.")))


def test_deferred_nan_guard_names_the_first_bad_batch_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(train_mod, "check_interval", lambda device: 8)
    cfg = tiny_config(train={"epochs": 1}, report={"enabled": False})
    train_and_evaluate(cfg, tmp_path / "run")
    before = (tmp_path / "run" / LATEST).read_bytes()

    def poison(trainer):  # after the 4th step of epoch 2 every weight turns NaN
        if trainer.state.epoch == 1 and trainer.state.batch == 4:
            with torch.no_grad():
                for p in trainer.model.parameters():
                    p.fill_(float("nan"))

    with pytest.raises(TrainingDiverged) as err:
        train_and_evaluate(tiny_config(train={"epochs": 2}, report={"enabled": False}),
                           tmp_path / "run", resume=True, callbacks={"on_batch_end": [poison]})
    assert "epoch 2, batch 5" in str(err.value) and "intact" in str(err.value)
    assert (tmp_path / "run" / LATEST).read_bytes() == before


# ------------------------------------------------------------------------- full disk


def test_full_disk_is_one_error_and_the_run_stays_resumable(tmp_path):
    run = tmp_path / "run"
    args = ["--data", "digits", "--quiet", "--no-report", "--importance-samples", "2",
            "--set", "train.threads=1"]
    assert run_cli("train", *args, "--epochs", "1", "--out", str(run)).returncode == 0
    before = (run / LATEST).read_bytes()
    limit = 200 * 1024  # `ulimit -f 200`: smaller than a checkpoint
    assert len(before) > limit

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    res = subprocess.run([sys.executable, "-m", "vaekit", "train", "--resume", str(run),
                          "--epochs", "2", *args], capture_output=True, text=True,
                         preexec_fn=small_files, timeout=300)
    line = assert_one_error(res, "could not write", "latest.safetensors", "MiB free",
                            "--resume")
    assert "File too large" in line
    assert (run / LATEST).read_bytes() == before  # untouched
    assert not list((run / "checkpoints").glob(".*.tmp"))
    res = run_cli("train", "--resume", str(run), "--epochs", "2", *args)
    assert res.returncode == 0, res.stderr
    assert [json.loads(l)["epoch"] for l in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_write_error_names_the_file_and_free_space(tmp_path):
    import errno

    err = ckpt.write_error(tmp_path / "x.bin", OSError(errno.ENOSPC, "No space left on device"))
    assert isinstance(err, WriteError) and "x.bin" in str(err) and "MiB free" in str(err)
    err = ckpt.write_error(tmp_path / "x.bin", OSError(errno.EACCES, "Permission denied"))
    assert "Permission denied" in str(err) and "MiB free" not in str(err)


def test_unwritable_out_folder_is_one_error(tmp_path):
    assert_one_error(run_cli("train", "--data", "digits", "--epochs", "1",
                             "--out", "/proc/vaekit-cannot/run"), "could not write")
