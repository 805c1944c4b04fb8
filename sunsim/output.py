"""Every file sunsim writes goes through here: nothing half-written, nothing replaced by surprise.

* Files are written to a temporary file in the same folder, flushed to disk and renamed over the
  target (atomic on POSIX): a reader, a crash or a kill never sees a partial file.
* One rule for every command's outputs (:func:`claim_outputs`), checked before any work: an output
  never has the path of an input or of another output; a folder output is new, empty or marked by the
  same command; a file output is new or one the same command wrote (its folder's ledger says so).
* Folders of results are built in a private staging folder (``.staging-<pid>-*``, carrying
  :data:`STAGING_MARKER`) and published by rename. A published folder carries a marker file naming
  the command; a later publish replaces only folders that carry it, so no command deletes a folder it
  did not create. Staging folders left by a killed process are removed by the next run in the same place.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sunsim.errors import InputError

#: The file that marks a folder as written by sunsim (and so replaceable by a later run).
MARKER = ".sunsim-run.json"
#: Single files sunsim wrote into a folder it does not own (a trace, a sweep table), so it may replace them.
LEDGER = ".sunsim-files.json"
STAGING_PREFIX = ".staging-"
#: The file inside a staging folder that makes it one: a folder merely named like one is never removed.
STAGING_MARKER = ".sunsim-staging.json"


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


def check_replaceable(out: Path, folders: Iterable[str], files: Iterable[str], field: str,
                      command: str = "run") -> None:
    """Refuse, before any work, to publish over anything in ``out`` that ``command`` did not write.

    ``out`` follows :func:`check_owned_folder`; of its entries, ``folders`` are replaced only when they
    carry ``command``'s :data:`MARKER`, ``files`` only when they are regular files.
    """
    out = Path(out)
    check_owned_folder(out, command, field)
    for name in folders:
        target = out / name
        if os.path.lexists(target) and (target.is_symlink() or marker_command(target) != command):
            raise InputError(f"{field}: {str(target)!r} already exists and was not written by sunsim {command} "
                             f"(no {MARKER} of its own); refusing to replace it: choose another output folder")
    for name in files:
        target = out / name
        if os.path.lexists(target) and not stat.S_ISREG(os.lstat(target).st_mode):
            raise InputError(f"{field}: {str(target)!r} exists and is not a regular file; refusing to replace it")


def mark(folder: Path, info: dict) -> Path:
    """Write the marker that lets a later run replace ``folder``."""
    return write_json(Path(folder) / MARKER, {"written_by": "sunsim", **info})


# --------------------------------------------------------------------------------------
# The one rule for outputs, shared by every command
@dataclass(frozen=True)
class Output:
    """One thing a command is about to write: a ``folder`` it owns whole, or a single ``file``."""

    path: Path
    field: str
    kind: str = "folder"  # "folder" | "file"


def claim_outputs(command: str, outputs: Iterable[Output], inputs: Iterable[tuple[Path, str]] = ()) -> None:
    """Check, before any work, that ``command`` may write every one of ``outputs``; raise InputError if not.

    The rule, for every command:

    * an output never has the path of an input, lies inside an output folder, or holds an input;
    * a folder output is new, empty, or marked by an earlier run of the same command
      (:data:`MARKER`): sunsim never writes into a folder it did not create;
    * a file output is new, or a regular file this command wrote (recorded in the folder's
      :data:`LEDGER`, or inside a folder this command owns) and unchanged since.

    Error messages name both paths of a clash, so the user sees what would have been lost.
    """
    outs = [Output(Path(o.path), o.field, o.kind) for o in outputs]
    ins = [(Path(p), what) for p, what in inputs]
    for i, out in enumerate(outs):
        for path, what in ins:
            if _same(out.path, path) or (out.kind == "folder" and _inside(path, out.path)):
                verb = "is" if _same(out.path, path) else "holds"
                raise InputError(f"{out.field}: the output {str(out.path)!r} {verb} the {what} {str(path)!r}; "
                                 "an output never replaces an input: choose another path")
            if os.path.isdir(out.path) and out.kind == "file" and _inside(path, out.path):
                raise InputError(f"{out.field}: {str(out.path)!r} is a folder holding the {what} {str(path)!r}")
        for other in outs[i + 1:]:
            if _same(out.path, other.path) or (out.kind == "folder" and _inside(other.path, out.path)) or (
                    other.kind == "folder" and _inside(out.path, other.path)):
                raise InputError(f"{other.field}: {str(other.path)!r} clashes with {out.field} {str(out.path)!r}; "
                                 "two outputs of one command never share a path or a folder")
        if out.kind == "folder":
            check_owned_folder(out.path, command, out.field)
        else:
            check_owned_file(out.path, command, out.field)


def _real(path: Path) -> str:
    return os.path.realpath(os.path.abspath(path))


def _same(a: Path, b: Path) -> bool:
    if _real(a) == _real(b):
        return True
    try:
        return os.path.samefile(a, b)  # hard links
    except OSError:
        return False


def _inside(path: Path, folder: Path) -> bool:
    real, base = _real(path), _real(folder)
    return real.startswith(base.rstrip(os.sep) + os.sep)


def marker_command(folder: Path) -> str | None:
    """The command whose marker ``folder`` carries; None without one (or with a damaged one)."""
    try:
        data = json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data.get("command") if isinstance(data, dict) and data.get("written_by") == "sunsim" else None


def check_owned_folder(folder: Path, command: str, field: str) -> Path:
    """``folder`` is new, empty, or marked by ``command``; its nearest existing parent is writable."""
    folder = Path(folder)
    if os.path.lexists(folder):
        if folder.is_symlink() or not folder.is_dir():
            raise InputError(f"{field}: {str(folder)!r} exists and is not a folder; give a new folder")
        owner = marker_command(folder)
        if owner is None and _has_entries(folder):
            raise InputError(f"{field}: {str(folder)!r} already holds files sunsim did not write (no {MARKER}); "
                             f"sunsim {command} writes only into a new or empty folder, or one it wrote before")
        if owner is not None and owner != command:
            raise InputError(f"{field}: {str(folder)!r} holds the output of `sunsim {owner}`; sunsim {command} "
                             "will not write into it: choose a new folder")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise InputError(f"{field}: cannot write in {str(folder)!r} (permission denied)")
        return folder
    return check_folder(folder, field)


def check_owned_file(path: Path, command: str, field: str, suffixes: Iterable[str] | None = None) -> Path:
    """``path`` is new, or a regular file ``command`` wrote and nobody changed since."""
    path = check_file_target(path, field, suffixes)
    if os.path.lexists(path) and not owns_file(path, command):
        raise InputError(f"{field}: {str(path)!r} already exists and was not written by sunsim {command}; "
                         "refusing to replace it: give a new path")
    return path


def owns_file(path: Path, command: str) -> bool:
    """Whether ``command`` wrote the file at ``path`` (and it is unchanged since)."""
    path = Path(path)
    if marker_command(path.parent) == command:
        return True
    entry = _read_ledger(path.parent).get(path.name)
    try:
        st = os.stat(path)
    except OSError:
        return False
    return isinstance(entry, dict) and entry.get("command") == command and \
        entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns


def record_file(path: Path, command: str) -> None:
    """Note in the folder's ledger that ``command`` wrote ``path``, so a later run of it may replace the file."""
    path = Path(path)
    if marker_command(path.parent) == command:
        return
    ledger = _read_ledger(path.parent)
    st = os.stat(path)
    ledger[path.name] = {"command": command, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    write_json(path.parent / LEDGER, {"written_by": "sunsim", "files": ledger})


def _read_ledger(folder: Path) -> dict:
    try:
        data = json.loads((Path(folder) / LEDGER).read_text())
    except (OSError, ValueError):
        return {}
    files = data.get("files") if isinstance(data, dict) else None
    return dict(files) if isinstance(files, dict) else {}


def _has_entries(folder: Path) -> bool:
    with os.scandir(folder) as it:
        return any(True for _ in it)


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
        (stage / STAGING_MARKER).write_text(json.dumps({"written_by": "sunsim", "pid": os.getpid(),
                                                       "started": process_start(os.getpid())}))
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def clean_stale_staging(folder: Path) -> list[Path]:
    """Remove staging folders in ``folder`` whose creating process is gone (or was started after them).

    Only folders carrying :data:`STAGING_MARKER` are staging folders; a user's folder of the same name
    pattern is never touched."""
    removed = []
    try:
        entries = list(Path(folder).glob(f"{STAGING_PREFIX}*"))
    except OSError:
        return removed
    for entry in entries:
        if entry.is_symlink() or not entry.is_dir() or not (entry / STAGING_MARKER).is_file():
            continue
        if _is_stale(entry):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _is_stale(entry: Path) -> bool:
    """A staging folder is stale when the process its marker names is gone or is a later one with that pid."""
    try:
        info = json.loads((entry / STAGING_MARKER).read_text())
        pid, started = int(info["pid"]), info.get("started")
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if pid == os.getpid():
        return False
    if not _alive(pid):
        return True
    now_started = process_start(pid)  # the pid may have been reused by a later process
    return started is not None and now_started is not None and now_started > float(started) + 1.0


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
    for item in sorted(p for p in stage.iterdir() if p != old and p.name != STAGING_MARKER):
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
