"""Staging folders: results are built in a private folder and published by rename, so a failure or a
kill leaves no half-written results, and a killed process's leftovers are recognised by their marker."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from sunsim.errors import InputError
from sunsim.output.files import _fsync_dir
from sunsim.output.rule import MARKER

STAGING_PREFIX = ".staging-"
#: The file inside a staging folder that makes it one: a folder merely named like one is never removed.
STAGING_MARKER = ".sunsim-staging.json"


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
