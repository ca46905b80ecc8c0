"""Fuzzing every file parser with Hypothesis: random bytes, and valid files with bytes
changed, cut short or padded, never produce anything but vaekit's own error type."""

import gzip
import io
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from vaekit import config as config_mod
from vaekit.data import Where, read_amat, read_csv, read_idx, read_image_folder, read_raw
from vaekit.errors import VaekitError

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def mutated(valid: bytes):
    """Valid bytes with up to 8 bytes replaced, then optionally cut short or padded."""
    edits = st.lists(st.tuples(st.integers(0, len(valid) - 1), st.integers(0, 255)), max_size=8)
    tails = st.one_of(st.just(None), st.integers(0, len(valid)), st.binary(min_size=1, max_size=64))

    def apply(args):
        changes, tail = args
        out = bytearray(valid)
        for i, b in changes:
            out[i] = b
        if isinstance(tail, int):
            out = out[:tail]
        elif isinstance(tail, bytes):
            out += tail
        return bytes(out)

    return st.tuples(edits, tails).map(apply)


def either(valid: bytes):
    return st.one_of(st.binary(max_size=3000), mutated(valid))


def only_vaekit_errors(fn, *args):
    try:
        fn(*args)
    except VaekitError:
        pass


def idx_bytes(array):
    return bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape) + array.tobytes()


IDX = idx_bytes(np.arange(3 * 5 * 4, dtype=np.uint8).reshape(3, 5, 4))
AMAT = ("\n".join(" ".join("01"[(i * j) % 2] for j in range(784)) for i in range(3)) + "\n").encode()
CSV = b"a,b,label\n1,2.5,0\n3,-4e-3,1\n5,6,0\n"


def npy_bytes(array, npz=False):
    buf = io.BytesIO()
    (np.savez(buf, x=array, y=np.arange(len(array))) if npz else np.save(buf, array))
    return buf.getvalue()


def png_bytes(mode="L"):
    buf = io.BytesIO()
    Image.fromarray(np.arange(48, dtype=np.uint8).reshape(6, 8) if mode == "L" else
                    np.arange(144, dtype=np.uint8).reshape(6, 8, 3)).save(buf, format="PNG")
    return buf.getvalue()


@FUZZ
@given(data=either(IDX), gz=st.booleans())
def test_idx(tmp_path, data, gz):
    path = tmp_path / "f-idx3-ubyte"
    path.write_bytes(gzip.compress(data) if gz else data)
    only_vaekit_errors(read_idx, path)


@FUZZ
@given(data=mutated(gzip.compress(IDX)))
def test_idx_gzip_stream(tmp_path, data):
    path = tmp_path / "f.gz"
    path.write_bytes(data)
    only_vaekit_errors(read_idx, path)


@FUZZ
@given(data=either(AMAT))
def test_amat(tmp_path, data):
    path = tmp_path / "f.amat"
    path.write_bytes(data)
    only_vaekit_errors(read_amat, path)


@FUZZ
@given(data=st.one_of(either(CSV), st.text(max_size=300).map(str.encode)))
def test_csv(tmp_path, data):
    path = tmp_path / "f.csv"
    path.write_bytes(data)
    only_vaekit_errors(read_csv, path)
    only_vaekit_errors(read_raw, str(path), Where())


@FUZZ
@given(data=st.one_of(either(npy_bytes(np.random.default_rng(0).random((4, 3)).astype(np.float32))),
                      mutated(npy_bytes(np.arange(12.0).reshape(3, 4), npz=True))),
       suffix=st.sampled_from([".npy", ".npz"]))
def test_arrays(tmp_path, data, suffix):
    path = tmp_path / f"f{suffix}"
    path.write_bytes(data)
    only_vaekit_errors(read_raw, str(path), Where())


@FUZZ
@given(data=st.one_of(either(png_bytes("L")), mutated(png_bytes("RGB"))),
       size=st.one_of(st.none(), st.tuples(st.integers(1, 9), st.integers(1, 9))))
def test_image_folder(tmp_path, data, size):
    folder = tmp_path / "imgs"
    folder.mkdir(exist_ok=True)
    (folder / "a.png").write_bytes(png_bytes("L"))
    (folder / "b.png").write_bytes(data)
    only_vaekit_errors(read_image_folder, folder, size)


VALID_TOML = Path(config_mod.__file__).parent.joinpath("presets", "bmnist-vae.toml").read_bytes()


@FUZZ
@given(data=st.one_of(either(VALID_TOML), st.text(max_size=400).map(str.encode)))
def test_config_toml(tmp_path, data):
    path = tmp_path / "c.toml"
    path.write_bytes(data)
    only_vaekit_errors(config_mod.resolve, None, path)


@FUZZ
@given(key=st.text(max_size=30), value=st.text(max_size=30))
def test_set_overrides(key, value):
    def apply():
        config_mod.resolve(overrides=[config_mod.parse_override(f"{key}={value}")])
    only_vaekit_errors(apply)
