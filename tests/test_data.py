"""Every data source, read from small files the tests write, and every bad input refused
with one clear error naming the file. Downloads are tested for real against an HTTP server
on 127.0.0.1."""

import gzip
import hashlib
import http.server
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vaekit import config as config_mod
from vaekit.data import sources as data_sources
from vaekit.data import (SOURCES, Source, Where, dataset_for_spec, download_source, load_dataset,
                         read_amat, read_csv, read_idx, read_image_folder, read_raw)
from vaekit.download import Remote, cache_dir
from vaekit.errors import DataError

from conftest import run_cli


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file written independently of vaekit's reader: magic, big-endian sizes, data."""
    codes = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C}
    header = bytes([0, 0, codes[array.dtype], array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def cfg(name, **data):
    return config_mod.merge(config_mod.Config(), {"data": {"name": str(name), **data}}).data


# ------------------------------------------------------------------------ image folders


def write_png(path: Path, array: np.ndarray):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture
def class_folder(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "shapes"
    for label in ("circle", "square"):
        for i in range(12):
            write_png(folder / label / f"{i}.png", rng.integers(0, 256, (10, 12), dtype=np.uint8))
    return folder


def test_image_folder_with_class_subfolders(class_folder):
    raw = read_image_folder(class_folder)
    x, y = raw.splits["train"], raw.labels["train"]
    assert x.shape == (24, 1, 10, 12) and raw.shape == (1, 10, 12)
    assert raw.class_names == ["circle", "square"] and list(np.bincount(y)) == [12, 12]
    first = np.asarray(Image.open(class_folder / "circle" / "0.png"), dtype=np.float32) / 255
    np.testing.assert_array_equal(x[0, 0], first)
    assert raw.likelihood == "bernoulli" and raw.binarize == "dynamic"


def test_colour_images_and_resize(tmp_path):
    rng = np.random.default_rng(1)
    write_png(tmp_path / "a.png", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(tmp_path / "b.jpg", quality=95)
    write_png(tmp_path / "c.png", rng.integers(0, 256, (16, 16), dtype=np.uint8))  # grey joins colour
    with pytest.raises(DataError, match=r"different sizes.*data.image_size"):
        read_image_folder(tmp_path)
    raw = read_image_folder(tmp_path, size=(8, 6))
    assert raw.splits["train"].shape == (3, 3, 8, 6) and raw.labels["train"] is None
    assert raw.likelihood == "gaussian"
    grey = raw.splits["train"][2]
    np.testing.assert_array_equal(grey[0], grey[1])  # the grey image repeated in 3 channels


@pytest.mark.parametrize("make, words", [
    (lambda d: None, "folder is empty"),
    (lambda d: (d / "notes.txt").write_text("hi"), "no PNG or JPEG images"),
    (lambda d: (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really"), "broken.png: not a readable image"),
    (lambda d: (write_png(d / "x.png", np.zeros((4, 4), np.uint8)),
                write_png(d / "cls" / "y.png", np.zeros((4, 4), np.uint8))), "both at the top"),
])
def test_bad_image_folders(tmp_path, make, words):
    folder = tmp_path / "imgs"
    folder.mkdir()
    make(folder)
    with pytest.raises(DataError, match=words) as err:
        read_image_folder(folder)
    assert "imgs" in str(err.value)


def test_train_on_a_folder_of_pngs_with_labels(class_folder, tmp_path):
    run = tmp_path / "run"
    res = run_cli("train", "--data", str(class_folder), "--epochs", "1", "--latent-dim", "2",
                  "--set", "model.hidden=[16]", "--quiet", "--importance-samples", "4",
                  "--no-report", "--out", str(run))
    assert res.returncode == 0, res.stderr
    spec = json.loads((run / "data.json").read_text())
    assert spec["class_names"] == ["circle", "square"] and spec["shape"] == [1, 10, 12]
    assert sum(spec["sizes"].values()) == 24
    res = run_cli("evaluate", str(run), "-k", "3", "--json")  # the same test set, rebuilt
    assert res.returncode == 0, res.stderr


# ------------------------------------------------------------------------- IDX, .amat


def test_idx_plain_and_gzip_and_every_corruption(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = idx_bytes(images)
    (tmp_path / "ok").write_bytes(raw)
    (tmp_path / "ok.gz").write_bytes(gzip.compress(raw))
    np.testing.assert_array_equal(read_idx(tmp_path / "ok"), images)
    np.testing.assert_array_equal(read_idx(tmp_path / "ok.gz"), images)
    cases = {
        "truncated.gz": (gzip.compress(raw)[:-9], "truncated or corrupt"),
        "short": (raw[:-5], "header says"),
        "long": (raw + b"\0", "header says"),
        "magic": (b"\1\2" + raw[2:], "bad magic"),
        "empty": (b"", "empty"),
        "header": (raw[:6], "truncated"),
    }
    for name, (content, words) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DataError, match=words) as err:
            read_idx(tmp_path / name)
        assert name in str(err.value)


def write_idx_dataset(folder: Path, n_train=30, n_test=10, labels_off_by=0, gz=True):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        for kind, arr in (("images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)),
                          ("labels-idx1-ubyte", rng.integers(0, 10, n + labels_off_by, dtype=np.uint8))):
            content = idx_bytes(arr)
            name = f"{prefix}-{kind}"
            if gz:
                (folder / (name + ".gz")).write_bytes(gzip.compress(content))
            else:
                (folder / name).write_bytes(content)


def test_idx_dataset_from_a_folder_and_label_count_mismatch(tmp_path):
    write_idx_dataset(tmp_path / "fmnist", gz=False)
    data = load_dataset(cfg("fashion-mnist", data_dir=str(tmp_path / "fmnist"), valid_fraction=0.2))
    assert data.spec.sizes == {"train": 24, "test": 10, "valid": 6}
    assert data.spec.class_names[0] == "T-shirt/top" and data.train_labels.dtype == torch.int64
    write_idx_dataset(tmp_path / "bad", labels_off_by=1)
    with pytest.raises(DataError, match="11 t10k labels for 10 images|31 train labels for 30 images"):
        load_dataset(cfg("fashion-mnist", data_dir=str(tmp_path / "bad")))


def test_amat_reader_and_its_errors(tmp_path):
    rows = np.random.default_rng(0).integers(0, 2, (3, 784))
    text = "\n".join(" ".join(map(str, r)) for r in rows) + "\n"
    (tmp_path / "a.amat").write_text(text)
    np.testing.assert_array_equal(read_amat(tmp_path / "a.amat"), rows)
    (tmp_path / "crlf.amat").write_bytes(text.replace("\n", "\r\n").encode())
    np.testing.assert_array_equal(read_amat(tmp_path / "crlf.amat"), rows)
    (tmp_path / "cut.amat").write_text(text[:-100])
    with pytest.raises(DataError, match="line 3 has"):
        read_amat(tmp_path / "cut.amat")
    (tmp_path / "grey.amat").write_text(text.replace("1", "0.5", 1))
    with pytest.raises(DataError, match="line 1 holds a value other than 0 or 1"):
        read_amat(tmp_path / "grey.amat")


# -------------------------------------------------------------------- arrays and CSV


def test_arrays_of_every_shape(tmp_path):
    rng = np.random.default_rng(0)
    for shape, model_shape in (((20, 5), (5,)), ((20, 6, 7), (1, 6, 7)), ((20, 3, 6, 7), (3, 6, 7))):
        np.save(tmp_path / "x.npy", rng.random(shape).astype(np.float32))
        raw = read_raw(str(tmp_path / "x.npy"), Where())
        assert raw.shape == model_shape and raw.image == (len(shape) > 2)
    np.savez(tmp_path / "xy.npz", x=rng.random((20, 4)), y=np.repeat(["a", "b"], 10))
    raw = read_raw(str(tmp_path / "xy.npz"), Where())
    assert raw.class_names == ["a", "b"] and list(raw.labels["train"][:2]) == [0, 0]


@pytest.mark.parametrize("array, words", [
    (np.arange(5.0), "1-D array"),
    (np.array([[1.0, np.nan], [0.0, 1.0]]), "NaN or infinite"),
    (np.array([[1.0, np.inf], [0.0, 1.0]]), "NaN or infinite"),
    (np.zeros((0, 3)), "no examples"),
    (np.array([["a", "b"]]), "numeric"),
])
def test_bad_arrays(tmp_path, array, words):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(DataError, match=words) as err:
        read_raw(str(tmp_path / "bad.npy"), Where())
    assert "bad.npy" in str(err.value)


def test_bad_array_files(tmp_path):
    (tmp_path / "empty.npy").write_bytes(b"")
    (tmp_path / "junk.npz").write_bytes(b"PK\3\4 not a zip")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.savez(tmp_path / "mismatch.npz", x=np.zeros((5, 2)), y=np.zeros(4))
    for name, words in (("empty.npy", "empty"), ("junk.npz", "not a valid"),
                        ("obj.npy", "Python objects"), ("mismatch.npz", "4 labels for 5")):
        with pytest.raises(DataError, match=words) as err:
            read_raw(str(tmp_path / name), Where())
        assert name in str(err.value)


def test_csv_with_header_label_and_errors(tmp_path):
    (tmp_path / "ok.csv").write_text("a,b,label\n1,2,0\n3,4,1\n")
    x, y = read_csv(tmp_path / "ok.csv")
    np.testing.assert_array_equal(x, [[1, 2], [3, 4]])
    np.testing.assert_array_equal(y, [0, 1])
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n3,oops\n")
    with pytest.raises(DataError, match=r"bad.csv: row 3, column 2 is not a number: 'oops'"):
        read_csv(tmp_path / "bad.csv")
    (tmp_path / "ragged.csv").write_text("1,2\n3\n")
    with pytest.raises(DataError, match="row 2 has 1 columns"):
        read_csv(tmp_path / "ragged.csv")


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(DataError) as err:
        read_raw("mnsit", Where())
    for name in SOURCES:
        assert name in str(err.value)


def test_missing_files_say_how_to_get_them(tmp_path):
    with pytest.raises(DataError, match="vaekit download mnist"):
        load_dataset(cfg("mnist", data_dir=str(tmp_path)))


# ---------------------------------------------------------- splits and preprocessing


def test_seeded_split_dynamic_binarisation_and_fixed_test_set():
    data = load_dataset(cfg("digits", valid_fraction=0.2, test_fraction=0.1))
    assert data.spec.sizes == {"test": 180, "valid": 359, "train": 1258}
    again = load_dataset(cfg("digits", valid_fraction=0.2, test_fraction=0.1))
    torch.testing.assert_close(data.test, again.test)  # binarised once, by the split seed
    assert set(torch.unique(data.test).tolist()) == {0.0, 1.0}
    other = load_dataset(cfg("digits", valid_fraction=0.2, test_fraction=0.1, split_seed=1))
    assert not torch.equal(data.test, other.test)
    # dynamic: a fresh Bernoulli draw each epoch whose mean is the grey level
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([data.train_epoch(g) for _ in range(300)])
    assert not torch.equal(draws[0], draws[1])
    assert float((draws.mean(0) - data.train).abs().max()) < 0.15
    assert data.train.min() >= 0 and data.train.max() <= 1 and not torch.equal(data.train, data.train.round())


def test_refit_trains_on_the_validation_split_and_keeps_the_test_set(tmp_path):
    # dynamic binarisation: the validation examples join the training split as grey levels
    # (drawn anew each epoch like the rest); the held-out draws, and so the test set, are
    # those of the run without refit
    plain = load_dataset(cfg("digits", valid_fraction=0.2, test_fraction=0.1))
    refit = load_dataset(cfg("digits", valid_fraction=0.2, test_fraction=0.1, refit=True))
    assert refit.spec.sizes == {"test": 180, "valid": 0, "train": 1258 + 359}
    assert refit.spec.refit and refit.spec.test_sha256 == plain.spec.test_sha256
    torch.testing.assert_close(refit.test, plain.test, rtol=0, atol=0)
    torch.testing.assert_close(refit.train[:1258], plain.train, rtol=0, atol=0)
    joined = refit.train[1258:]
    assert not torch.equal(joined, joined.round())  # grey, not the held-out binary draw
    # the held-out draw of each joined example is a Bernoulli draw of its grey levels
    assert bool((plain.valid[joined == 0] == 0).all()) and bool((plain.valid[joined == 1] == 1).all())
    assert abs(float(plain.valid.mean() - joined.mean())) < 0.01
    assert torch.equal(refit.train_labels, torch.cat([plain.train_labels, plain.valid_labels]))
    assert len(refit.valid) == 0 and len(refit.valid_labels) == 0
    with pytest.raises(DataError, match=r"data.refit = true.*--split test"):
        refit.split("valid")
    # static binarisation: the joined examples keep the very binary values they had
    write_idx_dataset(tmp_path / "f", n_train=40, gz=False)
    kw = dict(data_dir=str(tmp_path / "f"), valid_fraction=0.25, binarize="static")
    plain = load_dataset(cfg("fashion-mnist", **kw))
    refit = load_dataset(cfg("fashion-mnist", refit=True, **kw))
    torch.testing.assert_close(refit.train, torch.cat([plain.train, plain.valid]), rtol=0, atol=0)
    torch.testing.assert_close(refit.test, plain.test, rtol=0, atol=0)
    # the run's data rebuilt from its data.json, and an older data.json (no refit key)
    again = dataset_for_spec(type(refit.spec).from_dict(json.loads(json.dumps(refit.spec.to_dict()))))
    torch.testing.assert_close(again.train, refit.train, rtol=0, atol=0)
    old = plain.spec.to_dict()
    del old["refit"]
    assert len(dataset_for_spec(type(plain.spec).from_dict(old)).valid) == 10


def test_rebuilt_dataset_is_checked_against_the_recorded_test_set(tmp_path):
    write_idx_dataset(tmp_path / "f", gz=False)
    data = load_dataset(cfg("fashion-mnist", data_dir=str(tmp_path / "f")))
    torch.testing.assert_close(dataset_for_spec(data.spec).test, data.test)
    write_idx_dataset(tmp_path / "g", n_test=10, gz=False)
    arr = np.random.default_rng(5).integers(0, 256, (10, 28, 28), dtype=np.uint8)
    (tmp_path / "g" / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(arr))
    with pytest.raises(DataError, match="differs from the one this run was trained with"):
        dataset_for_spec(data.spec, str(tmp_path / "g"))


def test_standardisation_and_its_log_jacobian(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal([10.0, -3.0, 0.5], [2.0, 0.1, 5.0], size=(500, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    data = load_dataset(cfg(tmp_path / "x.npy"))
    spec = data.spec
    assert spec.scaling == "standardize" and spec.likelihood == "gaussian"
    std = np.array(spec.scale)
    assert spec.log_abs_det_jacobian == pytest.approx(-np.log(std).sum())
    torch.testing.assert_close(data.train.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    raw = torch.from_numpy(x[:7])
    torch.testing.assert_close(spec.inverse(spec.transform(raw)), raw, atol=1e-5, rtol=1e-6)


# --------------------------------------------------------------------------- downloads


class Server:
    """A one-folder HTTP server on 127.0.0.1. ``behaviour[name]`` = "drop" sends the
    announced length but closes the connection half-way; "404" answers not found."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.behaviour, self.hits = dict(files), {}, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                name = self.path.rsplit("/", 1)[-1]
                outer.hits.append(name)
                if name not in outer.files or outer.behaviour.get(name) == "404":
                    self.send_error(404)
                    return
                body = outer.files[name]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if outer.behaviour.get(name) == "drop":
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/files"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake_source(tmp_path, monkeypatch):
    """A downloadable IDX dataset with tiny files and their MD5s, registered for the test."""
    write_idx_dataset(tmp_path / "origin")
    files = {p.name: p.read_bytes() for p in (tmp_path / "origin").iterdir()}
    remotes = tuple(Remote(name, ("http://127.0.0.1:9/never/" + name,),
                           md5=(hashlib.md5(body).hexdigest(),)) for name, body in files.items())
    source = SOURCES["fashion-mnist"]
    fake = Source("tiny-idx", "test", "30/10", "1x28x28", True, "the test's server",
                  data_sources._idx_loader("tiny-idx", [str(i) for i in range(10)]),
                  folder="tiny-idx", files=source.files, remotes=remotes)
    monkeypatch.setitem(SOURCES, "tiny-idx", fake)
    monkeypatch.setenv("VAEKIT_CACHE_DIR", str(tmp_path / "cache"))
    return files


def cache_listing():
    root = cache_dir()
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def test_download_verifies_and_caches(fake_source):
    with Server(fake_source) as server:
        folder = download_source("tiny-idx", server.url)
        assert sorted(p.name for p in folder.iterdir()) == sorted(fake_source)
        data = load_dataset(cfg("tiny-idx"))  # found in the cache, no data directory
        assert data.spec.sizes["test"] == 10
        before = len(server.hits)
        download_source("tiny-idx", server.url)  # already there: nothing fetched again
        assert len(server.hits) == before


@pytest.mark.parametrize("behaviour, words", [
    ("corrupt", "checksum mismatch"), ("drop", "dropped after"), ("404", "404")])
def test_failed_download_leaves_nothing_in_the_cache(fake_source, behaviour, words):
    name = "train-images-idx3-ubyte.gz"
    files = dict(fake_source)
    if behaviour == "corrupt":
        body = bytearray(files[name])
        body[100] ^= 0xFF
        files[name] = bytes(body)
    with Server(files) as server:
        if behaviour != "corrupt":
            server.behaviour[name] = behaviour
        with pytest.raises(DataError, match=words) as err:
            download_source("tiny-idx", server.url)
    assert name in str(err.value)
    assert not any(name in p for p in cache_listing())  # no file, no partial file
    assert not [p for p in cache_listing() if p.endswith(".part")]


def test_load_downloads_only_when_asked(fake_source):
    with pytest.raises(DataError, match="vaekit download tiny-idx"):
        load_dataset(cfg("tiny-idx"))
    assert cache_listing() == []
    with Server(fake_source) as server:
        good = load_dataset(cfg("tiny-idx", download=True, mirror=server.url))
    assert good.spec.sizes["train"] == 27


def test_real_fashion_mnist_files_download_and_verify(data_dir, tmp_path, monkeypatch):
    """Debian's recompressed copy of Fashion-MNIST, served locally, passes the content check;
    the CLI's download command puts it in the cache and train reads it from there."""
    folder = data_dir / "fashion-mnist"
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.name.endswith(".gz")}
    monkeypatch.setenv("VAEKIT_CACHE_DIR", str(tmp_path / "cache"))
    with Server(files) as server:
        res = run_cli("train", "--data", "fashion-mnist", "--download", "--set",
                      f"data.mirror=\"{server.url}\"", "--epochs", "1", "--set", "data.max_train=500",
                      "--set", "model.hidden=[32]", "--quiet", "--importance-samples", "2",
                      "--no-report", "--out", str(tmp_path / "run"), env={"VAEKIT_DATA_DIR": ""})
        assert res.returncode == 0, res.stderr
        assert sorted(p.name for p in (tmp_path / "cache" / "fashion-mnist").iterdir()) == sorted(files)
        hits = len(server.hits)
        res = run_cli("download", "fashion-mnist", "--mirror", server.url)
        assert res.returncode == 0 and len(server.hits) == hits  # verified once, kept
    assert json.loads((tmp_path / "run" / "data.json").read_text())["sizes"]["test"] == 10_000


def test_train_on_fashion_mnist_folder_given_directly(data_dir, tmp_path):
    res = run_cli("train", "--data", "fashion-mnist", "--data-dir", str(data_dir / "fashion-mnist"),
                  "--epochs", "1", "--set", "data.max_train=500", "--set", "model.hidden=[32]",
                  "--quiet", "--importance-samples", "2", "--no-report", "--out", str(tmp_path / "run"))
    assert res.returncode == 0, res.stderr
    assert "test ELBO" in res.stdout


@pytest.mark.parametrize("name, shape, likelihood, n", [
    ("default", [1, 28, 28], "bernoulli", 5000), ("digits", [1, 8, 8], "bernoulli", 1797),
    ("swiss-roll", [3], "gaussian", 10_000)])
def test_builtin_sources_that_need_no_files(name, shape, likelihood, n):
    data = load_dataset(cfg(name))
    assert data.spec.shape == shape and data.spec.likelihood == likelihood
    assert sum(data.spec.sizes.values()) == n and data.test_labels is not None
    if likelihood == "bernoulli":
        assert data.train.min() >= 0 and data.train.max() <= 1 and data.spec.binarize == "dynamic"
    else:  # the swiss roll's label is its manifold coordinate t, in [1.5 pi, 4.5 pi]
        assert data.spec.scaling == "standardize" and data.train_labels.is_floating_point()
        assert 1.5 * np.pi <= float(data.train_labels.min()) and float(data.train_labels.max()) <= 4.5 * np.pi


def test_mnist_source_reads_its_idx_files_from_a_subfolder(tmp_path):
    write_idx_dataset(tmp_path / "mnist")  # data_dir/mnist/, as the registry looks for it
    data = load_dataset(cfg("mnist", data_dir=str(tmp_path)))
    assert data.spec.class_names == [str(i) for i in range(10)] and data.spec.sizes["test"] == 10
    assert data.spec.data_dir == str(tmp_path.resolve())
