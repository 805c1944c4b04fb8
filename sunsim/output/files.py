"""Atomic files: every file sunsim writes goes to a temporary file beside it, is flushed to disk and
renamed over the target, so a reader, a crash or a kill never sees a partial file."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_atomic(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, flush it to disk, rename it over ``path``.

    The temporary file lives in the same folder, so the rename is atomic; it is removed on any failure.
    The result gets the usual mode (0o666 less the umask, i.e. 0o644 by default), not mkstemp's 0o600.
    """
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def write_text(path: Path, text: str) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(text))


def write_bytes(path: Path, data: bytes) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_bytes(data))


def write_json(path: Path, data: Any, indent: int | None = 2) -> Path:
    return write_text(path, json.dumps(data, indent=indent, default=str) + "\n")


def write_table(df, path: Path, float_format: str = "%.9g") -> Path:
    """A DataFrame as CSV or Parquet, chosen by the suffix of ``path``."""
    path = Path(path)
    if path.suffix == ".parquet":
        return write_atomic(path, lambda tmp: df.to_parquet(tmp, index=False))
    return write_atomic(path, lambda tmp: df.to_csv(tmp, index=False, float_format=float_format))


def write_figure(fig, path: Path, **savefig: Any) -> Path:
    """A matplotlib figure, in the format named by the suffix of ``path``."""
    path = Path(path)
    return write_atomic(path, lambda tmp: fig.savefig(tmp, format=path.suffix.lstrip("."), **savefig))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable; best effort (some filesystems refuse to open folders)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


