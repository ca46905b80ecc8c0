"""SIGKILL at random moments during training never leaves an unusable run directory."""

import random
import signal
import subprocess
import sys
import time

from vaekit import checkpoint as ckpt
from vaekit.rundir import load_run
from vaekit.checkpoint import LATEST

ARGS = ["--data", "digits", "--set", "model.hidden=[512, 512]", "--latent-dim", "8",
        "--set", "data.max_train=256", "--batch-size", "32", "--quiet", "--set", "train.threads=1",
        "--importance-samples", "4"]


def start(*args):
    return subprocess.Popen([sys.executable, "-m", "vaekit", "train", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_checkpoint(proc, run, timeout=120):
    deadline = time.time() + timeout
    while not (run / LATEST).exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline
        time.sleep(0.05)


def test_repeated_sigkill_while_checkpointing_then_resume(tmp_path):
    run = tmp_path / "run"
    rng = random.Random(0)
    proc = start(*ARGS, "--epochs", "400", "--out", str(run))
    wait_for_checkpoint(proc, run)  # the first kill comes once a checkpoint exists
    kills = 0
    for i in range(8):
        time.sleep(rng.uniform(0.05, 1.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.communicate()
        tensors, meta = ckpt.load(run / LATEST)  # always a whole checkpoint
        assert meta["kind"] == "training" and any(k.startswith("model.") for k in tensors)
        load_run(run)  # the run stays usable
        proc = start("--resume", str(run), "--epochs", "400", "--quiet", "--importance-samples", "4")
        time.sleep(1.5)  # let the resumed process get past its imports before the next kill
    assert kills >= 6
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    epoch = ckpt.load(run / LATEST)[1]["state"]["epoch"]
    done = subprocess.run([sys.executable, "-m", "vaekit", "train", "--resume", str(run), "--epochs",
                           str(epoch + 2), "--quiet", "--importance-samples", "4"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert not list((run / "checkpoints").glob(".*.tmp"))
    lines = (run / "metrics.jsonl").read_text().splitlines()
    import json
    assert [json.loads(l)["epoch"] for l in lines] == list(range(1, epoch + 3))


def test_ctrl_c_saves_and_exits_cleanly_and_resume_continues(tmp_path):
    run = tmp_path / "run"
    proc = start(*ARGS, "--epochs", "400", "--out", str(run))
    wait_for_checkpoint(proc, run)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and f"vaekit train --resume {run}" in err
    state = ckpt.load(run / LATEST)[1]["state"]
    done = subprocess.run([sys.executable, "-m", "vaekit", "train", "--resume", str(run), "--epochs",
                           str(state["epoch"] + 1), "--quiet", "--importance-samples", "4"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "test ELBO" in done.stdout


def test_second_writer_is_refused_and_a_killed_writer_frees_the_run(tmp_path):
    run = tmp_path / "run"
    proc = start(*ARGS, "--epochs", "400", "--out", str(run))
    wait_for_checkpoint(proc, run)
    second = subprocess.run([sys.executable, "-m", "vaekit", "train", "--resume", str(run), "--quiet"],
                            capture_output=True, text=True, timeout=120)
    assert second.returncode == 2
    assert f"is being trained by process {proc.pid}" in second.stderr and "Traceback" not in second.stderr
    proc.send_signal(signal.SIGKILL)  # a crash: the kernel releases the lock
    proc.communicate()
    epoch = ckpt.load(run / LATEST)[1]["state"]["epoch"]
    done = subprocess.run([sys.executable, "-m", "vaekit", "train", "--resume", str(run), "--epochs",
                           str(epoch + 1), "--quiet", "--importance-samples", "4", "--no-report"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def _complete(run):
    """Every real file in the run directory is whole."""
    import json

    from PIL import Image

    for path in run.rglob("*"):
        if not path.is_file() or path.name.endswith(".tmp") or path.name == ".lock":
            continue
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".jsonl":
            [json.loads(l) for l in path.read_text().splitlines()]
        elif path.suffix == ".png":
            Image.open(path).verify()
        elif path.suffix == ".html":
            assert path.read_text().rstrip().endswith("</html>"), path
        elif path.suffix == ".safetensors":
            ckpt.load(path)
        elif path.suffix == ".npz":
            import numpy as np
            np.load(path)["x"]


def test_random_kills_during_train_evaluate_and_report_never_leave_half_files(tmp_path):
    """Ten SIGKILLs at random moments across train, evaluate and report; every file stays
    whole after each, and train --resume always continues."""
    run = tmp_path / "run"
    rng = random.Random(1)
    proc = start(*ARGS, "--epochs", "400", "--out", str(run))
    wait_for_checkpoint(proc, run)
    time.sleep(rng.uniform(0.2, 2.0))
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    kills, attempts = 1, 0
    # each command runs for several seconds, so a delay of up to 5 s lands inside it
    commands = [["train", "--resume", str(run), "--epochs", "400", "--quiet", "--importance-samples", "4"],
                ["evaluate", str(run), "-k", "20000"],
                ["report", str(run), "--importance-samples", "20000", "--explorer-grid", "96"]]
    while kills < 10:
        attempts += 1
        assert attempts <= 30, f"only {kills} kills landed in {attempts} attempts"
        argv = commands[attempts % len(commands)]
        proc = subprocess.Popen([sys.executable, "-m", "vaekit", *argv], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(0.5, 5.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.communicate()
        _complete(run)
    epoch = ckpt.load(run / LATEST)[1]["state"]["epoch"]
    done = subprocess.run([sys.executable, "-m", "vaekit", "train", "--resume", str(run), "--epochs",
                           str(epoch + 1), "--quiet", "--importance-samples", "4"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    _complete(run)
    assert not list(run.rglob(".*.tmp"))  # the resumed train removed what the killed ones left
