"""Bad input through the real `vaekit` command: every case exits with status 2 and one
`error:` line that names the problem, prints no traceback, and leaves every file of a
pre-existing good run (and of the damaged copy the case works on) byte-identical."""

import gzip
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_one_error, run_cli

TINY = ["--data", "digits", "--epochs", "1", "--latent-dim", "2", "--set", "model.hidden=[16]",
        "--quiet", "--importance-samples", "2", "--no-report", "--set", "train.threads=1"]


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    run = tmp_path_factory.mktemp("good") / "run"
    res = run_cli("train", *TINY, "--out", str(run))
    assert res.returncode == 0, res.stderr
    return run


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


class Payload:
    """Unpickling this creates a marker file: the proof that a loader ran code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def idx(array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def fashion_folder(d: Path, images_bytes=None, train_labels=None) -> Path:
    folder = d / "fm"
    folder.mkdir()
    rng = np.random.default_rng(0)
    files = {"train-images-idx3-ubyte.gz": gzip.compress(idx(rng.integers(0, 256, (20, 28, 28)))),
             "train-labels-idx1-ubyte.gz": gzip.compress(idx(rng.integers(0, 10, 20 if train_labels is None else train_labels))),
             "t10k-images-idx3-ubyte.gz": gzip.compress(idx(rng.integers(0, 256, (5, 28, 28)))),
             "t10k-labels-idx1-ubyte.gz": gzip.compress(idx(rng.integers(0, 10, 5)))}
    if images_bytes is not None:
        files["train-images-idx3-ubyte.gz"] = images_bytes(files["train-images-idx3-ubyte.gz"])
    for name, body in files.items():
        (folder / name).write_bytes(body)
    return folder


def damaged_copy(good: Path, d: Path, damage) -> Path:
    run = d / "copy"
    shutil.copytree(good, run)
    damage(run)
    return run


def flip_weight_bytes(run: Path) -> None:
    """Flip bytes in the middle of best.safetensors' tensor data (past its header), where
    safetensors' own checks cannot see it: the weights change, the file still parses."""
    path = run / "checkpoints/best.safetensors"
    data = bytearray(path.read_bytes())
    start = 8 + int.from_bytes(data[:8], "little")
    middle = (start + len(data)) // 2
    for i in range(middle, middle + 8):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def npy(d, name, array, **kw):
    np.save(d / name, array, **kw)
    return str(d / name)


def write(path: Path, content) -> str:
    """Write bytes or text to path; return the path (for a command line)."""
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return str(path)


def npz(path: Path, **arrays) -> str:
    np.savez(path, **arrays)
    return str(path)


def folder(path: Path) -> str:
    path.mkdir()
    return str(path)


# Each case: (id, setup(tmp, good) -> argv, words that the error line must contain)
CASES = [
    # data files and folders
    ("empty-file", lambda d, g: ["train", "--data", write(d / "e.npy", b"")], ["e.npy", "empty"]),
    ("truncated-npy", lambda d, g: ["train", "--data", write(d / "t.npy", b"\x93NUMPY\x01\x00v\x00{'descr': '<f4'")], ["t.npy", "not a valid"]),
    ("one-dimensional", lambda d, g: ["train", "--data", npy(d, "v.npy", np.arange(10.0))], ["v.npy", "1-D"]),
    ("nan", lambda d, g: ["train", "--data", npy(d, "n.npy", np.array([[0.5, np.nan]] * 20))], ["n.npy", "NaN"]),
    ("inf-csv", lambda d, g: ["train", "--data", write(d / "i.csv", "1,2\n3,inf\n" * 10)], ["i.csv", "infinite"]),
    ("csv-text-cell", lambda d, g: ["train", "--data", write(d / "c.csv", "a,b\n1,2\n3,oops\n")], ["c.csv", "row 3, column 2", "oops"]),
    ("pickled-objects", lambda d, g: ["train", "--data", npy(d, "o.npy", np.array([{"a": 1}] * 3, dtype=object), allow_pickle=True)], ["o.npy", "Python objects"]),
    ("string-array", lambda d, g: ["train", "--data", npy(d, "s.npy", np.array([["a", "b"]] * 5))], ["s.npy", "numeric"]),
    ("bernoulli-out-of-range", lambda d, g: ["train", "--data", npy(d, "g.npy", np.full((30, 4), 3.0, np.float32)), "--likelihood", "bernoulli"], ["Bernoulli", "[0, 1]"]),
    ("labels-mismatch", lambda d, g: ["train", "--data", npz(d / "l.npz", x=np.zeros((6, 3)), y=np.zeros(5))], ["l.npz", "5 labels for 6"]),
    ("missing-file", lambda d, g: ["train", "--data", str(d / "absent.npy")], ["absent.npy", "not found"]),
    ("unknown-dataset", lambda d, g: ["train", "--data", "mnsit"], ["unknown dataset", "fashion-mnist"]),
    ("empty-folder", lambda d, g: ["train", "--data", folder(d / "imgs")], ["imgs", "empty"]),
    ("truncated-gzip", lambda d, g: ["train", "--data", "fashion-mnist", "--data-dir", str(fashion_folder(d, lambda b: b[: len(b) // 2]))], ["train-images", "truncated or corrupt"]),
    ("idx-count-mismatch", lambda d, g: ["train", "--data", "fashion-mnist", "--data-dir", str(fashion_folder(d, lambda b: gzip.compress(gzip.decompress(b)[:-100])))], ["train-images", "header says"]),
    ("idx-labels-mismatch", lambda d, g: ["train", "--data", "fashion-mnist", "--data-dir", str(fashion_folder(d, train_labels=19))], ["19 train labels for 20 images"]),
    # configuration and options
    ("unknown-key", lambda d, g: ["train", "--set", "model.latnt_dim=2"], ["model.latnt_dim", "did you mean 'model.latent_dim'"]),
    ("wrong-type", lambda d, g: ["train", "--set", "model.latent_dim=\"two\""], ["model.latent_dim", "integer"]),
    ("zero-epochs", lambda d, g: ["train", "--epochs", "0"], ["train.epochs", "positive"]),
    ("negative-batch", lambda d, g: ["train", "--batch-size", "-5"], ["train.batch_size", "positive"]),
    ("nan-learning-rate", lambda d, g: ["train", "--lr", "nan"], ["train.lr", "positive"]),
    ("latent-larger-than-data", lambda d, g: ["train", "--data", "digits", "--latent-dim", "100"], ["latent_dim = 100", "exceeds the data dimension 64"]),
    ("bad-toml", lambda d, g: ["train", "--config", write(d / "c.toml", "[model\nlatent_dim = 2")], ["c.toml", "not valid TOML"]),
    ("unknown-section", lambda d, g: ["train", "--config", write(d / "u.toml", "[modle]\nlatent_dim = 2\n")], ["[modle]", "did you mean"]),
    ("unknown-preset", lambda d, g: ["train", "--preset", "bmnist-vea"], ["unknown preset", "bmnist-vae"]),
    ("no-cuda", lambda d, g: ["train", *TINY, "--device", "cuda", "--out", str(d / "r")], ["cuda", "--device cpu"]),
    ("bad-image-size", lambda d, g: ["train", "--set", "data.image_size=[0, 5]"], ["data.image_size"]),
    ("unknown-option-value", lambda d, g: ["train", "--prior", "cauchy"], ["model.prior", "cauchy"]),
    ("ema-decay-one", lambda d, g: ["train", *TINY, "--set", "train.ema_decay=1", "--out", str(d / "r")], ["train.ema_decay", "[0, 1)"]),
    ("weight-decay-negative", lambda d, g: ["train", *TINY, "--set", "train.weight_decay=-0.1", "--out", str(d / "r")], ["train.weight_decay", "zero or positive"]),
    ("refit-with-restarts", lambda d, g: ["train", *TINY, "--set", "data.refit=true", "--set", "train.restarts=3", "--out", str(d / "r")], ["data.refit", "train.restarts"]),
    ("existing-run-dir", lambda d, g: ["train", *TINY, "--out", str(g)], ["already exists", "--resume"]),
    # run directories and checkpoints
    ("missing-run-dir", lambda d, g: ["evaluate", str(d / "nope")], ["does not exist"]),
    ("truncated-checkpoint", lambda d, g: ["evaluate", str(damaged_copy(g, d, lambda r: (r / "checkpoints/best.safetensors").write_bytes((r / "checkpoints/best.safetensors").read_bytes()[:500])))], ["best.safetensors", "not a vaekit checkpoint"]),
    ("empty-checkpoint", lambda d, g: ["sample", str(damaged_copy(g, d, lambda r: (r / "checkpoints/best.safetensors").write_bytes(b"")))], ["best.safetensors", "not a vaekit checkpoint"]),
    ("missing-checkpoint", lambda d, g: ["encode", str(damaged_copy(g, d, lambda r: (r / "checkpoints/best.safetensors").unlink()))], ["best.safetensors", "missing"]),
    ("missing-config", lambda d, g: ["evaluate", str(damaged_copy(g, d, lambda r: (r / "config.toml").unlink()))], ["config.toml is missing"]),
    ("damaged-data-json", lambda d, g: ["report", str(damaged_copy(g, d, lambda r: (r / "data.json").write_text("{\"name\": ")))], ["data.json", "damaged"]),
    ("config-unknown-key-in-run", lambda d, g: ["evaluate", str(damaged_copy(g, d, lambda r: (r / "config.toml").write_text((r / "config.toml").read_text() + "\n[extra]\nx = 1\n")))], ["config.toml", "damaged"]),
    ("run-from-another-model", lambda d, g: ["evaluate", str(damaged_copy(g, d, lambda r: (r / "config.toml").write_text((r / "config.toml").read_text().replace("latent_dim = 2", "latent_dim = 3"))))], ["do not fit the model"]),
    ("resume-without-checkpoint", lambda d, g: ["train", "--resume", str(damaged_copy(g, d, lambda r: (r / "checkpoints/latest.safetensors").unlink()))], ["no checkpoint to resume from"]),
    ("resume-changes-shape", lambda d, g: ["train", "--resume", str(g), "--latent-dim", "3"], ["cannot change", "model.latent_dim"]),
    ("resume-changes-activation", lambda d, g: ["train", "--resume", str(g), "--set", "model.activation=tanh"], ["cannot change", "model.activation", "'relu' -> 'tanh'", "new run"]),
    ("resume-changes-posterior-floor", lambda d, g: ["train", "--resume", str(g), "--set", "model.min_scale=0.01"], ["cannot change", "model.min_scale", "--out NEW"]),
    ("resume-changes-data", lambda d, g: ["train", "--resume", str(g), "--set", "data.max_train=5"], ["cannot change", "data.max_train"]),
    ("branch-changes-activation", lambda d, g: ["train", "--resume", str(g), "--out", str(d / "r"), "--set", "model.activation=tanh"], ["cannot change", "model.activation"]),
    ("origin-set-by-hand", lambda d, g: ["train", *TINY, "--set", "origin.run=x", "--out", str(d / "r")], ["[origin]", "written by vaekit"]),
    ("flipped-weight-bytes", lambda d, g: ["evaluate", str(damaged_copy(g, d, flip_weight_bytes))], ["best.safetensors", "damaged", "checksum"]),
    ("mistyped-option", lambda d, g: ["evaluate", str(g), "--dat", str(d)], ["unrecognized arguments", "--dat"]),
    ("option-of-another-command", lambda d, g: ["evaluate", str(g), "--data", "x.npy"], ["unrecognized arguments", "--data"]),
    ("missing-data-dir", lambda d, g: ["evaluate", str(g), "--data-dir", str(d / "nowhere")], ["--data-dir", "does not exist"]),
    ("update-on-validation", lambda d, g: ["evaluate", str(g), "--split", "valid", "--update"], ["--update", "test set"]),
    ("zero-samples", lambda d, g: ["sample", str(g), "-n", "0"], ["at least 1"]),
    ("zero-importance-samples", lambda d, g: ["evaluate", str(g), "-k", "0"], ["at least 1"]),
    ("index-out-of-range", lambda d, g: ["interpolate", str(g), "--from", "0", "--to", "99999"], ["--to 99999", "0 to 179"]),
    ("unknown-output-type", lambda d, g: ["encode", str(g), "--out", str(d / "codes.txt")], ["codes.txt", ".npz"]),
    ("gmm-too-many-components", lambda d, g: ["gmm", npy(d, "p.npy", np.zeros((5, 2)) + np.arange(5)[:, None]), "-k", "9", "--out", str(d / "g")], ["n_components=9", "5"]),
]


@pytest.mark.parametrize("name, setup, words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_error_and_harms_nothing(good, tmp_path, name, setup, words):
    before = snapshot(good)
    argv = setup(tmp_path, good)
    copy = tmp_path / "copy"
    copy_before = snapshot(copy) if copy.exists() else None
    assert_one_error(run_cli(*argv), *words)
    assert snapshot(good) == before
    if copy_before is not None:
        assert snapshot(copy) == copy_before  # a failed command does not touch the damaged run either
    assert not (tmp_path / "r").exists()  # nothing created for a refused new run


def test_the_readme_counts_these_cases():
    """The README's Reliability section says how many bad inputs this file tries: keep the
    number true (the cases themselves are the parametrised test above)."""
    import re

    from conftest import ROOT

    said = re.search(r"tries (\d+) of them", (ROOT / "README.md").read_text())
    assert said and int(said.group(1)) == len(CASES), (said and said.group(1), len(CASES))
    assert len({c[0] for c in CASES}) == len(CASES)  # every case has its own name


def test_a_pickle_payload_where_a_checkpoint_belongs_is_refused_unrun(good, tmp_path):
    marker = tmp_path / "pwned"
    run = damaged_copy(good, tmp_path, lambda r: None)
    for name in ("best", "latest"):
        (run / "checkpoints" / f"{name}.safetensors").write_bytes(pickle.dumps(Payload(marker)))
    # a torch.save-style zip with the payload inside, too
    import torch
    torch.save({"model": Payload(marker)}, tmp_path / "zip.pt")
    for argv in (["evaluate", str(run)], ["sample", str(run)], ["train", "--resume", str(run)]):
        res = run_cli(*argv)
        assert res.returncode == 2 and "not a vaekit checkpoint" in res.stderr, res.stderr
        assert not marker.exists()
    shutil.copy(tmp_path / "zip.pt", run / "checkpoints" / "best.safetensors")
    res = run_cli("report", str(run))
    assert res.returncode == 2 and "not a vaekit checkpoint" in res.stderr
    assert not marker.exists()
    pickle.loads(pickle.dumps(Payload(marker)))  # the payload is real: unpickling runs it
    assert marker.exists()
