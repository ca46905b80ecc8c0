"""Fetching a built-in dataset's files into the user's cache: verified, atomic, resumable by
simply running again.

Each file is streamed to a temporary name in its destination folder while its MD5 is
computed; it is then checked (the length the server announced, then a checksum) and only
then renamed to its real name. A dropped connection, a short file or a checksum mismatch
removes the temporary file and raises :class:`~vaekit.errors.DataError`: the cache never
holds half a file or a wrong one.

A file is accepted when its MD5 is the one its publishers give for it, or when the SHA-256
of its *content* is (the decompressed IDX bytes; the 0/1 values of an ``.amat`` file):
redistributions such as Debian's recompress the ``.gz`` files, which changes their bytes
but not their content.

Cache folder: ``$VAEKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/vaekit``, else
``~/.cache/vaekit``; one sub-folder per dataset. ``mirror`` replaces the publishers'
addresses by another base URL (a local copy, or the test suite's HTTP server).
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .errors import DataError

log = logging.getLogger(__name__)

CACHE_ENV = "VAEKIT_CACHE_DIR"
CHUNK = 1 << 20


def cache_dir() -> Path:
    value = os.environ.get(CACHE_ENV)
    if value:
        return Path(value).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "vaekit"


@dataclass(frozen=True)
class Remote:
    """One published file: where it lives and how to recognise it."""

    filename: str
    urls: tuple[str, ...]  # full addresses, tried in order
    md5: tuple[str, ...] = ()  # of the file's bytes, as published
    content_sha256: tuple[str, ...] = ()  # of its content (see content_digest)
    content_digest: Callable[[Path], str] | None = field(default=None, compare=False)


def fetch(remote: Remote, folder: Path, mirror: str | None = None, timeout: float = 60.0) -> Path:
    """Download ``remote`` into ``folder`` (if it is not there yet) and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / remote.filename
    if target.is_file():
        return target
    urls = [mirror.rstrip("/") + "/" + remote.filename] if mirror else list(remote.urls)
    errors = []
    for url in urls:
        try:
            _download(url, target, remote, timeout)
            return target
        except DataError as e:
            if "checksum" in str(e):
                raise  # a wrong file is not cured by another mirror of the same name
            errors.append(str(e))
    raise DataError("; ".join(errors) + "; run the command again to retry, or fetch the file "
                    f"yourself into {folder}")


def _download(url: str, target: Path, remote: Remote, timeout: float) -> None:
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    received = 0
    try:
        md5 = hashlib.md5(usedforsecurity=False)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
                expected = response.headers.get("Content-Length")
                expected = int(expected) if expected and expected.isdigit() else None
                log.info("downloading %s%s", url, f" ({expected / 1e6:.1f} MB)" if expected else "")
                while True:
                    block = response.read(CHUNK)
                    if not block:
                        break
                    out.write(block)
                    md5.update(block)
                    received += len(block)
                out.flush()
                os.fsync(out.fileno())
        except urllib.error.HTTPError as e:
            raise DataError(f"{url}: the server answered {e.code} {e.reason}") from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
            reason = getattr(e, "reason", None) or e
            raise DataError(f"{url}: the connection failed after {received} bytes ({reason})") from None
        if expected is not None and received != expected:
            raise DataError(f"{url}: the connection dropped after {received} of {expected} bytes")
        if not _verified(tmp, md5.hexdigest(), remote):
            raise DataError(f"{url}: checksum mismatch: the file downloaded is not the published "
                            f"{remote.filename} (MD5 {md5.hexdigest()}); it was removed")
        os.replace(tmp, target)
    finally:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass


def _verified(path: Path, md5: str, remote: Remote) -> bool:
    if md5 in remote.md5:
        return True
    if remote.content_sha256 and remote.content_digest is not None:
        try:
            return remote.content_digest(path) in remote.content_sha256
        except DataError:
            return False  # unreadable content: certainly not the published file
    return False
