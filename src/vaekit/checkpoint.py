"""Checkpoints that cannot execute code on load, written atomically.

A checkpoint is one safetensors file: every tensor (model weights, optimiser moments,
random generator states) under a flat name, and one JSON document in the file's metadata
for everything else (config, epoch, optimiser hyper-parameters, versions). Loading parses
the safetensors header and raw tensor bytes only: no pickle, so a planted payload is
refused rather than run.

Nested state (``optimizer.state_dict()``, a scheduler's) is split by :func:`split_state`
into a JSON skeleton with ``{"__tensor__": name}`` placeholders plus the tensors, and put
back together by :func:`join_state`; dict keys keep their types (ints stay ints).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError, WriteError

FORMAT = "vaekit-checkpoint-1"
#: a run's checkpoints: the state after the last epoch (or Ctrl-C), and at the best one
LATEST = "checkpoints/latest.safetensors"
BEST = "checkpoints/best.safetensors"
#: one JSON line per epoch (the trainer's numbers)
METRICS = "metrics.jsonl"


def _umask() -> int:
    """The process's umask (read, then put back: there is no other way to read it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``:
    a reader sees the old file or the new one, never half of one."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # the writer's PID in the name: cleanup removes only temporaries of dead processes
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise write_error(path, e) from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError):  # the old file, if any, is untouched
            raise write_error(path, e) from None
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:  # pragma: no cover - some filesystems refuse directory fsync
        pass


_NO_ROOM = (errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC))


def write_error(path: Path, e: OSError) -> WriteError:
    """One line for a failed write: which file, why, and for a full disk the free space."""
    reason = e.strerror or type(e).__name__
    if e.errno in _NO_ROOM:
        try:
            free = shutil.disk_usage(_existing_parent(path)).free
            room = f"{free / 2**20:,.0f} MiB free on its filesystem"
        except OSError:
            room = "free space unknown"
        base = (f"could not write {path}: {reason} ({room}; a file-size limit, `ulimit -f`, "
                "gives this too)")
        err = WriteError(f"{base}; make room, then run the command again")
    else:
        base = f"could not write {path}: {reason}"
        err = WriteError(f"{base}; choose a folder you can write to")
    err.base = base
    return err


def _existing_parent(path: Path) -> Path:
    for p in (path, *path.parents):
        if p.exists():
            return p
    return Path(".")


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def read_jsonl(path: str | Path) -> list[dict]:
    """The records of a JSON-lines file (a run's ``metrics.jsonl``), in order; none when it
    is missing. A line that does not parse (the torn last line of a killed process, which
    atomic writes make rare) is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def write_jsonl(path: str | Path, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in rows))


# ------------------------------------------------------------------ nested state <-> flat


def split_state(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Replace every tensor in a nested structure by a placeholder; collect the tensors."""
    if isinstance(obj, torch.Tensor):
        name = f"{prefix}"
        tensors[name] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": name}
    if isinstance(obj, dict):
        return {"__dict__": [[k, split_state(v, f"{prefix}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"__list__": [split_state(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)],
                "tuple": isinstance(obj, tuple)}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} in a checkpoint")


def join_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            try:
                return tensors[skeleton["__tensor__"]]
            except KeyError:
                raise CheckpointError(f"checkpoint lacks tensor {skeleton['__tensor__']!r}") from None
        if "__dict__" in skeleton:
            return {k: join_state(v, tensors) for k, v in skeleton["__dict__"]}
        if "__list__" in skeleton:
            items = [join_state(v, tensors) for v in skeleton["__list__"]]
            return tuple(items) if skeleton.get("tuple") else items
    return skeleton


# ------------------------------------------------------------------------ save / load


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of every tensor's name, dtype, shape and bytes, in name order: written into a
    checkpoint's metadata and checked on load, so that a flipped byte inside a weight (which
    safetensors' header checks cannot see) is refused instead of loaded."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def to_bytes(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> bytes:
    from safetensors.torch import save

    doc = dict(meta, format=FORMAT, tensors_sha256=tensors_digest(tensors))
    return save({k: v.contiguous() for k, v in tensors.items()},
                metadata={"vaekit": json.dumps(doc, allow_nan=True)})


def save(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    atomic_write_bytes(path, to_bytes(tensors, meta))


def load(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint; anything that is not a well-formed vaekit safetensors file
    (a pickle, a truncated file, random bytes) raises :class:`CheckpointError`."""
    from safetensors.torch import load as st_load

    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {str(path)!r} is missing; the run directory is "
                              "incomplete (was training interrupted before its first epoch?)") from None
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {str(path)!r}: {e}") from None
    bad = (f"{str(path)!r} is not a vaekit checkpoint (corrupt, truncated, or another format; "
           "vaekit never unpickles files); restore it or retrain")
    if len(data) < 8:
        raise CheckpointError(bad)
    n = int.from_bytes(data[:8], "little")
    if n <= 0 or 8 + n > len(data):
        raise CheckpointError(bad)
    try:
        header = json.loads(data[8:8 + n])
        meta = json.loads(header.get("__metadata__", {}).get("vaekit", "null"))
        tensors = st_load(data)
    except Exception:  # safetensors' and json's errors for malformed bytes
        raise CheckpointError(bad) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(bad)
    recorded = meta.pop("tensors_sha256", None)  # absent from checkpoints of earlier versions
    if recorded is not None and recorded != tensors_digest(tensors):
        raise CheckpointError(f"checkpoint {str(path)!r} is damaged: its tensors do not match the "
                              "checksum recorded when it was written; restore it from a copy or "
                              "retrain (the run's other checkpoint, if intact, can be branched: "
                              "vaekit train --resume RUN --from latest|best --out NEW)")
    return tensors, meta


def rng_state() -> dict[str, torch.Tensor]:
    """The random generator training draws from: torch's global CPU generator (model
    initialisation). Training draws nothing from CUDA or MPS generators: its shuffles,
    binarisation and eps come from the trainer's own CPU generators (saved beside this), so
    no device generator is part of a run's state, and a checkpoint resumes on any machine,
    with any number of GPUs or none."""
    return {"rng.cpu": torch.get_rng_state()}


def set_rng_state(tensors: dict[str, torch.Tensor]) -> None:
    """Restore the CPU generator. The ``rng.cuda.N`` states that checkpoints of earlier
    versions hold are ignored: nothing in training drew from them, and the machine that
    resumes may have fewer GPUs (or none)."""
    if "rng.cpu" in tensors:
        torch.set_rng_state(tensors["rng.cpu"])


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files that killed writers left in ``folder`` (never a real
    file, never the temporary of a process still running). Returns what was removed."""
    removed = []
    for tmp in Path(folder).glob(".*.tmp"):
        parts = tmp.name.split(".")  # ["", name..., pid, random, "tmp"]
        try:
            pid = int(parts[-3])
        except (ValueError, IndexError):
            continue
        if _alive(pid):
            continue
        try:
            tmp.unlink()
            removed.append(tmp)
        except OSError:
            pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


# ------------------------------------------------------------------ model weights


def kept_weights(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model weights a checkpoint keeps: the weight average's where it holds one
    (``train.ema_decay``), else the trained weights."""
    avg = {k[len("ema.module."):]: v for k, v in tensors.items() if k.startswith("ema.module.")}
    return avg or {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}


def load_model_state(model, state: dict[str, torch.Tensor], where) -> None:
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        detail = next((l.strip() for l in first if "size mismatch" in l), first[-1] if first else "")
        raise CheckpointError(f"the weights in {where} do not fit the model its config describes "
                              f"({detail}); the run directory mixes files of different models") from None
    if missing or unexpected:
        raise CheckpointError(f"the weights in {where} do not fit the model its config describes "
                              f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]}); "
                              "the run directory mixes files of different models")
