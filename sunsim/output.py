"""Every file sunsim writes goes through here: nothing half-written, nothing replaced by surprise.

* Files are written to a temporary file in the same folder, flushed to disk and renamed over the
  target (atomic on POSIX): a reader, a crash or a kill never sees a partial file.
* Output targets are checked before any work: a file target must be a regular file or a new path
  (never a device, a link or a folder), and its folder must be creatable and writable.
* Folders of results are built in a private staging folder (``.staging-<pid>-*``) and published by
  rename. A published folder carries a marker file; a later publish replaces only folders that carry
  it, so a run never deletes a folder it did not create. Staging folders left by a killed process are
  removed by the next run in the same place.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from .errors import InputError

#: The file that marks a folder as written by sunsim (and so replaceable by a later run).
MARKER = ".sunsim-run.json"
STAGING_PREFIX = ".staging-"


# --------------------------------------------------------------------------------------
# Atomic files
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


# --------------------------------------------------------------------------------------
# Checks before any work
def check_folder(folder: Path, field: str) -> Path:
    """``folder`` is a writable folder, or can be created as one (its nearest existing parent is writable)."""
    folder = Path(folder)
    probe = folder
    while not os.path.lexists(probe):
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"{field}: {str(probe)!r} is not a folder, so {str(folder)!r} cannot be written")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"{field}: cannot write in {str(probe)!r} (permission denied)")
    return folder


def check_file_target(path: Path, field: str, suffixes: Iterable[str] | None = None) -> Path:
    """An output file: a new path or an existing regular file (not a device, link or folder) in a writable folder."""
    path = Path(path)
    if suffixes is not None:
        allowed = list(suffixes)
        if path.suffix not in allowed:
            raise InputError(f"{field}: {str(path)!r} has an unknown extension; allowed: {', '.join(allowed)}")
    if os.path.lexists(path):
        mode = os.lstat(path).st_mode
        if not stat.S_ISREG(mode):
            kind = "folder" if stat.S_ISDIR(mode) else "link" if stat.S_ISLNK(mode) else "special file"
            raise InputError(f"{field}: {str(path)!r} is a {kind}; give a new path or a regular file to replace")
    check_folder(path.parent, field)
    return path


def check_output_folder(folder: Path, field: str) -> Path:
    """An output folder: a new path or an existing folder, writable."""
    folder = Path(folder)
    if os.path.lexists(folder) and not folder.is_dir():
        raise InputError(f"{field}: {str(folder)!r} exists and is not a folder")
    return check_folder(folder, field)


def check_replaceable(out: Path, folders: Iterable[str], files: Iterable[str], field: str) -> None:
    """Refuse, before any work, to publish over anything in ``out`` that sunsim did not write.

    ``folders`` are replaced only when they carry :data:`MARKER`; ``files`` (directly in ``out``) only
    when they are regular files and ``out`` itself carries the marker.
    """
    out = Path(out)
    check_output_folder(out, field)
    for name in folders:
        target = out / name
        if os.path.lexists(target) and (target.is_symlink() or not (target / MARKER).is_file()):
            raise InputError(f"{field}: {str(target)!r} already exists and was not written by sunsim (no {MARKER}); "
                             "refusing to replace it: choose another output folder or remove it yourself")
    for name in files:
        target = out / name
        if not os.path.lexists(target):
            continue
        if not stat.S_ISREG(os.lstat(target).st_mode):
            raise InputError(f"{field}: {str(target)!r} exists and is not a regular file; refusing to replace it")
        if not (out / MARKER).is_file():
            raise InputError(f"{field}: {str(target)!r} already exists and was not written by sunsim (no {MARKER} "
                             f"in {str(out)!r}); refusing to replace it: choose another output folder")


def mark(folder: Path, info: dict) -> Path:
    """Write the marker that lets a later run replace ``folder``."""
    return write_json(Path(folder) / MARKER, {"written_by": "sunsim", **info})


# --------------------------------------------------------------------------------------
# Staging folders
@contextlib.contextmanager
def staging(folder: Path) -> Iterator[Path]:
    """A private folder inside ``folder`` to build outputs in; removed on exit, whatever happens.

    Its name holds this process's id, so a later run can tell a live staging folder from one left
    behind by a killed process (see :func:`clean_stale_staging`).
    """
    folder = Path(folder)
    clean_stale_staging(folder)
    stage = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=folder))
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def clean_stale_staging(folder: Path) -> list[Path]:
    """Remove staging folders in ``folder`` whose creating process is gone (or was started after them)."""
    removed = []
    try:
        entries = list(Path(folder).glob(f"{STAGING_PREFIX}*"))
    except OSError:
        return removed
    for entry in entries:
        if entry.is_symlink() or not entry.is_dir():
            continue
        if _is_stale(entry):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _is_stale(entry: Path) -> bool:
    pid_text = entry.name[len(STAGING_PREFIX):].split("-", 1)[0]
    try:
        made = entry.stat().st_mtime
    except OSError:
        return False
    if not pid_text.isdigit():  # an older naming without a pid: stale if older than this process
        started = process_start(os.getpid())
        return started is not None and made < started
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    if not _alive(pid):
        return True
    started = process_start(pid)  # the pid may have been reused by a later process
    return started is not None and made < started - 1.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_start(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), from /proc; None where unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22 of stat: start time in clock ticks after boot
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError, StopIteration):
        return None


def publish(stage: Path, out: Path, require_marker: bool = True) -> list[Path]:
    """Move every entry of ``stage`` into ``out``, replacing entries of the same name.

    With ``require_marker``, a folder is replaced only if it carries :data:`MARKER` (checked again
    here, just before the move). A replaced folder is first renamed into the staging folder, so it
    is never half deleted in place; the staging folder's cleanup removes it.
    """
    stage, out = Path(stage), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    old = stage / ".replaced"
    for item in sorted(p for p in stage.iterdir() if p != old):
        target = out / item.name
        if target.is_dir() and not target.is_symlink():
            if require_marker and not (target / MARKER).is_file():
                raise InputError(f"{str(target)!r} was not written by sunsim (no {MARKER}); refusing to replace it")
            old.mkdir(exist_ok=True)
            os.replace(target, old / item.name)
        os.replace(item, target)
        written.append(target)
    _fsync_dir(out)
    return written
